"""The eval report: one HTML file that escapes everything it shows, loads nothing from the
network, and draws its charts in a real headless Chromium."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from operator_ai.eval.report import render
from operator_ai.store.records import EvalRun, EvalTrial, TrialOutcome

T0 = datetime(2025, 6, 3, 9, 30, tzinfo=UTC)
LEADER = "etcd-leader-partition"
REDIS = "ratelimiter-redis-failover"
SCRIPT = "<script>alert(1)</script>"
IMG = '<img src=x onerror="alert(2)">'

RUN = EvalRun(
    id=7,
    model="anthropic:claude-sonnet-4-5",
    campaign="nightly",
    started_at=T0,
    ended_at=T0 + timedelta(minutes=42, seconds=5),
    operator_version="0.1.0",
    prompt_sha256="9f2c4e7a1b3d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8",
    scenarios=[LEADER, REDIS],
    trials=3,
    parallel=2,
)


def trial(
    id: int,
    scenario: str,
    attempt: int,
    outcome: TrialOutcome,
    why: str,
    ttd: float | None,
    ttm: float | None,
    sessions: list[int],
) -> EvalTrial:
    started = T0 + timedelta(minutes=5 * id)
    return EvalTrial(
        id=id,
        run_id=RUN.id,
        scenario=scenario,
        scenario_sha256="ab" * 32,
        attempt=attempt,
        lab="etcd" if scenario == LEADER else "ratelimiter",
        targets={"leader": "etcd-2"} if scenario == LEADER else {"primary": "redis-1"},
        outcome=outcome,
        why=why,
        started_at=started,
        injected_at=started + timedelta(seconds=20),
        ended_at=started + timedelta(minutes=4),
        ttd_seconds=ttd,
        ttm_seconds=ttm,
        overhead_seconds=31.5,
        steps=12 if sessions else 0,
        commands=9 if sessions else 0,
        state_changing=2 if sessions else 0,
        tokens_in=48_210 if sessions else 0,
        tokens_out=3_905 if sessions else 0,
        cost_usd=0.2031 if sessions else 0.0,
        error_rate=0.0,
        false_positives=0,
        tickets=[100 + id] if sessions else [],
        sessions=sessions,
    )


TRIALS = [
    trial(1, LEADER, 1, TrialOutcome.SUCCESS, "all invariants hold", 8.2, 61.0, [201]),
    trial(2, LEADER, 2, TrialOutcome.SUCCESS, "all invariants hold", 11.9, 95.4, [202]),
    trial(3, LEADER, 3, TrialOutcome.FAILED, f"quorum lost {IMG}", 9.7, None, [203]),
    trial(4, REDIS, 1, TrialOutcome.ESCALATED, "agent escalated to a human", 14.1, None, [204]),
    trial(5, REDIS, 2, TrialOutcome.TIMEOUT, "budget of 600 s spent", 12.5, None, [205, 206]),
    trial(6, REDIS, 3, TrialOutcome.NOT_DETECTED, "no ticket in 300 s", None, None, []),
]

TRANSCRIPTS = {
    1: "$ etcdctl endpoint status -w table\n| ENDPOINT | LEADER |\n| etcd-2 | true |\n",
    2: "$ etcdctl member list\nok\n",
    3: f"$ cat /tmp/page.html\n{SCRIPT}\n& done\n",
    4: "escalating: the primary does not answer PING\n",
    5: "$ redis-cli -p 6380 info replication\nrole:master\n" * 40,
}


@pytest.fixture(scope="module")
def document() -> str:
    return render(RUN, TRIALS, TRANSCRIPTS)


class _Tags(HTMLParser):
    """Every start tag with its attributes; script bodies are data, not tags."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags(document: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(document)
    return parser.tags


def test_transcripts_and_user_text_are_escaped(document: str) -> None:
    assert SCRIPT not in document
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in document
    assert IMG not in document
    assert not [attrs for tag, attrs in tags(document) if tag == "img"]
    assert "&amp; done" in document


def test_nothing_is_loaded_from_outside(document: str) -> None:
    found = tags(document)
    assert not [a for t, a in found if t == "link"]
    scripts = [a for t, a in found if t == "script"]
    assert len(scripts) == 4  # plotly.js once, then one per chart
    assert all("src" not in a for a in scripts)
    outside = [
        (t, v)
        for t, a in found
        for k, v in a.items()
        if k in ("src", "href") and v and v.startswith(("http:", "https:", "//"))
    ]
    assert outside == []
    assert document.count("Plotly.newPlot") == 3


def test_header_and_summary(document: str) -> None:
    assert "anthropic:claude-sonnet-4-5" in document
    assert "nightly" in document
    assert "2025-06-03T09:30:00Z" in document and "2025-06-03T10:12:05Z" in document
    assert "9f2c4e7a1b3d" in document and RUN.prompt_sha256 not in document
    # leader: 2 of 3 succeeded; TTD p50 9.7, TTM p50 over the two successes 78.2
    assert "67%" in document and "9.7" in document and "78.2" in document
    # the Redis scenario had no success, so no TTM
    redis_row = next(
        r for r in document.split("<tr>") if r.startswith(f'<td class="name">{REDIS}</td>')
    )
    assert redis_row.count("\u2013") >= 2 and "0%" in redis_row


def test_trials_link_to_their_transcripts(document: str) -> None:
    for t in TRIALS:
        assert f'href="#trial-{t.id}"' in document
        assert f'id="trial-{t.id}"' in document
    section = document.split('id="trial-6"')[1]
    assert "no agent session" in section
    assert "leader → etcd-2" in document and "primary → redis-1" in document
    assert "205, 206" in document


@dataclass(frozen=True)
class Browsed:
    screenshot: Path
    dom: str


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with a fresh profile and every host name unresolvable, so a page
    that needs the network fails to draw."""
    return subprocess.run(
        [
            "chromium",
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={profile}",
            "--window-size=1280,2000",
            "--virtual-time-budget=10000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.fixture(scope="module")
def browsed(document: str, tmp_path_factory: pytest.TempPathFactory) -> Browsed:
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    tmp = tmp_path_factory.mktemp("report")
    page = tmp / "report.html"
    page.write_text(document, encoding="utf-8")
    screenshot = tmp / "report.png"
    chromium(f"--screenshot={screenshot}", page.as_uri(), profile=tmp / "profile-shot")
    dom = chromium("--dump-dom", page.as_uri(), profile=tmp / "profile-dom").stdout
    return Browsed(screenshot, dom)


def test_chromium_draws_every_chart(browsed: Browsed) -> None:
    assert browsed.dom.count('class="plot-container plotly"') == 3
    assert browsed.dom.count('class="main-svg"') >= 3
    assert "no values" in browsed.dom  # the Redis scenario's empty TTM category
    assert LEADER in browsed.dom and REDIS in browsed.dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in browsed.dom


def test_screenshot_is_a_real_page(browsed: Browsed) -> None:
    width, height, pixels = read_png(browsed.screenshot.read_bytes())
    assert (width, height) == (1280, 2000)
    colours = set(pixels)
    assert len(colours) > 100
    white = sum(1 for p in pixels if p[:3] == (255, 255, 255))
    assert white < 0.97 * len(pixels)


def read_png(data: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """The size and the pixels of a non-interlaced 8-bit RGB or RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat, header = 8, b"", b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        position += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(idat)
    rows: list[bytes] = []
    previous = bytes(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        unfilter(kind, line, previous, channels)
        rows.append(bytes(line))
        previous = bytes(line)
    pixels = [tuple(row[x : x + channels]) for row in rows for x in range(0, stride, channels)]
    return width, height, pixels


def unfilter(kind: int, line: bytearray, previous: bytes, bpp: int) -> None:
    """Undo one scanline's PNG filter in place (RFC 2083, section 6)."""
    if kind == 0:
        return
    if kind == 2:
        line[:] = bytes((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        return
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        up = previous[i]
        corner = previous[i - bpp] if i >= bpp else 0
        if kind == 1:
            predictor = left
        elif kind == 3:
            predictor = (left + up) // 2
        else:
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            predictor = left if pa <= pb and pa <= pc else up if pb <= pc else corner
        line[i] = (line[i] + predictor) & 0xFF
