"""Offline SVG badges (hand-written SVG text, no network, no dependency) and the Markdown that shows them.

Three badges, after the Green AI Standard's "show your commitment" section:

* the pledge badge: the user commits to the Standard's practices (made only when asked for);
* the carbon-neutral badge: only from an offset certificate URL the user gives, which it links to (never computed);
* the measured-emissions badge: the emissions the records measured, with intensity and PUE in its tooltip.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse
from xml.sax.saxutils import escape, quoteattr

from green_callbacks.report import format as fmt

__all__ = [
    "Badge",
    "carbon_neutral_badge",
    "emissions_badge",
    "format_grams",
    "pledge_badge",
    "text_width_px",
]

_FONT_PX = 11
_PAD_PX = 6
_HEIGHT_PX = 20
# Approximate advance widths (px) of Verdana at 11 px, by character; anything else counts as 7 px.
_WIDTHS = {
    **dict.fromkeys("iljI.,:;|!'", 3.5),
    **dict.fromkeys("frt()[] -/", 4.5),
    **dict.fromkeys("abcdeghknopqsuvxyz", 6.9),
    **dict.fromkeys("0123456789", 7.0),
    **dict.fromkeys("ABCDEFGHJKLNOPQRSTUVXYZ", 7.7),
    **dict.fromkeys("mwMW%", 10.5),
}


def text_width_px(text: str) -> float:
    """Estimated width of ``text`` at 11 px Verdana (a per-character table; ~7 px for unlisted characters)."""
    return sum(_WIDTHS.get(c, 7.0) for c in text)


@dataclass(frozen=True)
class Badge:
    """One badge: its SVG text, the file name to save it under, and the Markdown to paste (with ``{path}``)."""

    name: str
    label: str
    message: str
    color: str
    svg: str
    link: str | None
    alt: str

    def markdown(self, path: str) -> str:
        """``![alt](path)``, wrapped in a link to :attr:`link` when the badge has one."""
        image = f"![{self.alt}]({path})"
        return f"[{image}]({self.link})" if self.link else image


def _render(label: str, message: str, color: str, title: str, link: str | None) -> str:
    left = round(text_width_px(label) + 2 * _PAD_PX)
    right = round(text_width_px(message) + 2 * _PAD_PX)
    width = left + right
    body = (
        f'<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/>'
        f'<stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{width}" height="{_HEIGHT_PX}" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{left}" height="{_HEIGHT_PX}" fill="#555"/>'
        f'<rect x="{left}" width="{right}" height="{_HEIGHT_PX}" fill="{color}"/>'
        f'<rect width="{width}" height="{_HEIGHT_PX}" fill="url(#s)"/></g>'
        f'<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" '
        f'font-size="{_FONT_PX}">'
        f'<text x="{left / 2:.1f}" y="15" fill="#010101" fill-opacity=".3">{escape(label)}</text>'
        f'<text x="{left / 2:.1f}" y="14">{escape(label)}</text>'
        f'<text x="{left + right / 2:.1f}" y="15" fill="#010101" fill-opacity=".3">{escape(message)}</text>'
        f'<text x="{left + right / 2:.1f}" y="14">{escape(message)}</text></g>'
    )
    if link:
        body = f"<a xlink:href={quoteattr(link)} target=\"_blank\">{body}</a>"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{width}" height="{_HEIGHT_PX}" role="img" aria-label={quoteattr(f"{label}: {message}")}>'
        f"<title>{escape(title)}</title>{body}</svg>\n"
    )


def pledge_badge(link: str | None = None) -> Badge:
    """The Green AI pledge: following the Standard's practices in development, infrastructure and deployment."""
    label, message = "Green AI", "pledged"
    title = ("Green AI Standard pledge: report time to retrain and hyperparameter sensitivity, prefer efficient "
             "search, share infrastructure, no fossil-fuel-focused use, offset the rest")
    url = _check_url(link, "pledge link") if link else None
    return Badge("green-ai-pledge", label, message, "#2e9d4c", _render(label, message, "#2e9d4c", title, url), url,
                 "Green AI pledge")


def carbon_neutral_badge(certificate_url: str, covers: str = "operational") -> Badge:
    """Carbon neutral, linking to the offset certificate the user gives (required: the claim must be checkable).

    ``covers`` says which total the certificate offsets: ``"operational"`` (energy × PUE × intensity) or
    ``"operational+embodied"`` (plus the hardware's amortised manufacturing emissions); the badge says it."""
    from green_callbacks.report.offsets import COVERS

    if covers not in COVERS:
        raise ValueError(f"covers must be one of {COVERS}, got {covers!r}")
    url = _check_url(certificate_url, "offset certificate URL")
    scope = "operational" if covers == "operational" else "incl. embodied"
    label, message = "carbon", f"neutral (offset, {scope})"
    what = "operational emissions only" if covers == "operational" else "operational and embodied emissions"
    title = f"Emissions offset ({what}); certificate: {url}"
    return Badge("carbon-neutral", label, message, "#44cc11", _render(label, message, "#44cc11", title, url), url,
                 "carbon neutral (offset certificate)")


def format_grams(grams: float) -> str:
    """``'0.45 g'``, ``'12.3 kg'``, ``'1.2 t'`` CO2e: three significant figures in the largest fitting unit."""
    return fmt.mass(grams)


def emissions_badge(emissions_gco2e: float, *, partial: bool = False, detail: str = "") -> Badge:
    """The measured emissions (after PUE); ``partial`` marks a total that misses unmeasured parts."""
    label = "CO2e measured"
    message = format_grams(emissions_gco2e) + (" (partial)" if partial else "")
    title = f"Measured with green_callbacks: {message} CO2e" + (f"; {detail}" if detail else "")
    return Badge("co2e-measured", label, message, "#007ec6", _render(label, message, "#007ec6", title, None), None,
                 f"CO2e measured: {message}")


def _check_url(url: str | None, what: str) -> str:
    parsed = urlparse(url or "")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"{what} must be an http(s) URL such as https://example.org/certificate/123, got {url!r}")
    return str(url)
