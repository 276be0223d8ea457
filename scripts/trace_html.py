"""Render one trace from Jaeger's query API as a self-contained HTML waterfall.

The Jaeger built by ``make jaeger`` (from the Go module proxy) serves a placeholder instead of
its web UI (the UI's assets are built separately, from the jaeger-ui repository); its query API
is complete. This draws a trace the way the UI's timeline does: one row per span, indented under
its parent, a bar for its time, coloured by service, with the ``stellwerk.*`` attributes.

    .venv/bin/python scripts/trace_html.py http://127.0.0.1:16686 RUN_ID > trace.html

The second argument is a trace id or a run id (the trace whose spans carry
``stellwerk.run_id``, looked up among the resolver's traces).
"""

from __future__ import annotations

import html
import json
import sys
import urllib.parse
import urllib.request
from typing import Any

COLOURS = {
    "stellwerk-resolver": "#1f77b4",
    "stellwerk-executor": "#2ca02c",
    "stellwerk-monitor": "#d62728",
}


def fetch(base: str, path: str, **params: str) -> Any:
    """GET a Jaeger query API path, decoded."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{base}{path}{query}", timeout=10) as reply:
        return json.loads(reply.read())


def find_trace(base: str, ident: str) -> dict[str, Any]:
    """The trace ``ident`` names: a trace id, else the trace of that run id."""
    if len(ident) in (16, 32):
        return dict(fetch(base, f"/api/traces/{ident}")["data"][0])
    tags = json.dumps({"stellwerk.run_id": ident})
    for trace in fetch(base, "/api/traces", service="stellwerk-resolver", tags=tags)["data"]:
        return dict(trace)
    raise SystemExit(f"no trace of run {ident} in {base}")


def tags_of(span: dict[str, Any]) -> dict[str, Any]:
    """A span's attributes."""
    return {t["key"]: t["value"] for t in span["tags"]}


def render(trace: dict[str, Any]) -> str:
    """The HTML page of ``trace``."""
    spans = trace["spans"]
    by_id = {s["spanID"]: s for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in spans:
        parents = [r["spanID"] for r in span["references"] if r["refType"] == "CHILD_OF"]
        parent = parents[0] if parents and parents[0] in by_id else None
        children.setdefault(parent, []).append(span)
    start = min(s["startTime"] for s in spans)
    total = max(s["startTime"] + s["duration"] for s in spans) - start or 1
    rows: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s["startTime"]):
            service = trace["processes"][span["processID"]]["serviceName"]
            colour = COLOURS.get(service, "#7f7f7f")
            left = (span["startTime"] - start) / total * 100
            width = max(span["duration"] / total * 100, 0.15)
            anchor = f"left:{left:.3f}%" if left < 80 else f"right:{100 - left - width:.3f}%"
            shown = {k: v for k, v in tags_of(span).items() if k.startswith("stellwerk.")}
            shown.pop("stellwerk.workflow_id", None)
            shown.pop("stellwerk.run_id", None)
            detail = " ".join(
                f"{k.removeprefix('stellwerk.')}={round(v, 2) if isinstance(v, float) else v}"
                for k, v in shown.items()
            )
            rows.append(
                f'<tr><td class="name" style="padding-left:{8 + depth * 16}px">'
                f'<span class="svc" style="background:{colour}">{html.escape(service)}</span> '
                f"{html.escape(span['operationName'])}"
                f'<div class="tags">{html.escape(detail)}</div></td>'
                f'<td class="lane"><div class="bar" style="left:{left:.3f}%;width:{width:.3f}%;'
                f'background:{colour}"></div><span class="dur" style="{anchor}">'
                f"{span['duration'] / 1000:.2f} ms</span></td></tr>"
            )
            walk(span["spanID"], depth + 1)

    walk(None, 0)
    services = sorted({p["serviceName"] for p in trace["processes"].values()})
    run = next((tags_of(s).get("stellwerk.run_id") for s in spans if tags_of(s).get(
        "stellwerk.run_id")), "")  # fmt: skip
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8">
<title>Trace {trace["traceID"]}</title><style>
body {{ font: 13px system-ui, sans-serif; margin: 16px; color: #222; overflow-x: hidden; }}
h1 {{ font-size: 17px; margin: 0 0 4px; }} .sub {{ color: #555; margin-bottom: 12px; }}
table {{ border-collapse: collapse; width: 100%; table-layout: fixed; }}
td {{ border-bottom: 1px solid #eee; padding: 3px 6px; vertical-align: top; }}
td.name {{ width: 46%; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }}
td.lane {{ position: relative; }}
.bar {{ position: absolute; top: 6px; height: 12px; border-radius: 2px; }}
.dur {{ position: absolute; top: 20px; font-size: 11px; color: #555; }}
.svc {{ color: #fff; border-radius: 3px; padding: 0 4px; font-size: 11px; }}
.tags {{ color: #666; font-size: 11px; margin-top: 1px; }}
</style></head><body>
<h1>Stellwerk run {html.escape(str(run))} — one trace</h1>
<div class="sub">trace {trace["traceID"]} · {len(spans)} spans · {total / 1000:.1f} ms ·
services: {html.escape(", ".join(services))} · from Jaeger's query API</div>
<table>{"".join(rows)}</table></body></html>
"""


def main(argv: list[str]) -> int:
    """``trace_html.py JAEGER_URL TRACE_OR_RUN_ID``: the page on stdout."""
    if len(argv) != 2:
        sys.stderr.write(__doc__ or "")
        return 2
    base, ident = argv
    sys.stdout.write(render(find_trace(base.rstrip("/"), ident)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
