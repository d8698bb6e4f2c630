"""A local web site for the desktop benchmark: text-heavy pages that load in stages, like real ones.

``/p/N`` is page N: a header, a big "next" link (``NEXT_LINK`` box, page pixels) to ``/p/N+1``, a table,
paragraphs and three images. The HTML answers after 20–60 ms and each image after 30–120 ms more (seeded
per page), so Chromium paints a page in several steps. Binds 127.0.0.1 on a free port.
"""

from __future__ import annotations

import io
import random
import time

from PIL import Image, ImageDraw

from tests.support.loopback_site import LoopbackSite

NEXT_LINK = (20, 70, 360, 60)  # x, y, width, height in page pixels
NEXT_LINK_RGB = (255, 0, 255)  # the only magenta on the page: find the link on screen by it
_TEXT = ("the quick brown fox jumps over lazy dog desktop agent screenshot model pixel window browser settle "
         "capture encode frame display invoice report travel booking search results")
WORDS = tuple(_TEXT.split(" "))


def _page(n: int) -> bytes:
    rng = random.Random(n)
    table = "".join("<tr>" + "".join(f"<td>{rng.randint(0, 99999)}</td>" for _ in range(8)) + "</tr>"
                    for _ in range(5))
    paras = "".join(f"<p>{' '.join(rng.choice(WORDS) for _ in range(70))}</p>" for _ in range(8))
    imgs = "".join(f'<img src="/img/{n}-{k}.png" width="300" height="140" alt="">' for k in range(3))
    x, y, w, h = NEXT_LINK
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Page {n}</title><style>
body {{ margin: 0; font: 16px sans-serif; background: #fafafa; }}
header {{ height: 60px; background: hsl({n * 47 % 360}, 60%, 40%); color: #fff; font-size: 28px; padding: 10px; }}
#next {{ position: absolute; left: {x}px; top: {y}px; width: {w}px; height: {h}px; line-height: {h}px;
         background: rgb(255, 0, 255); color: #000; font-size: 22px; text-align: center; }}
main {{ padding: 80px 20px 20px; }}
</style></head><body><header>Page {n}: {' '.join(rng.choice(WORDS) for _ in range(4))}</header>
<a id="next" href="/p/{n + 1}">Next page ({n + 1})</a>
<main>{imgs}<table border="1">{table}</table>{paras}</main></body></html>""".encode()


def _image(name: str) -> bytes:
    rng = random.Random(name)
    img = Image.new("RGB", (300, 140), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x, y = rng.randrange(280), rng.randrange(120)
        draw.rectangle((x, y, x + rng.randrange(10, 60), y + rng.randrange(5, 30)),
                       fill=tuple(rng.randrange(256) for _ in range(3)))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _route(path: str, query: str) -> tuple[bytes, str] | None:
    rng = random.Random(path)
    if path.startswith("/p/") and path[3:].isdigit():
        time.sleep(rng.uniform(0.02, 0.06))
        return _page(int(path[3:])), "text/html; charset=utf-8"
    if path.startswith("/img/") and path.endswith(".png"):
        time.sleep(rng.uniform(0.03, 0.12))
        return _image(path), "image/png"
    return None


class BenchSite(LoopbackSite):
    def __init__(self) -> None:
        super().__init__(_route, name="bench-site")

    def url(self, path: str = "/p/0") -> str:
        return super().url(path)
