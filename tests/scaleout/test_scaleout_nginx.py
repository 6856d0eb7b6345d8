"""ADR-003 phase 1 for real: three ``cowrite serve`` instances over one
PostgreSQL and one Redis, behind nginx rendered from ``deploy/nginx.conf``
(``ip_hash``).  Editors on both official clients, long-polling (which needs the
stickiness) and WebSocket, bound to source addresses that nginx hashes to
different instances, edit one document concurrently; everyone ends with the
same gap-free log."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from scaleout_cluster import (
    DEPLOY_CONF,
    NGINX,
    Cluster,
    addresses_by_instance,
    free_port,
    render_nginx_conf,
)
from scaleout_editors import NodeEditors, PyEditor, check_reports

pytestmark = [pytest.mark.integration, pytest.mark.timeout(100)]

PER_EDITOR = 30


def test_deploy_config_renders_and_passes_nginx_t(tmp_path: Path) -> None:
    if not os.access(NGINX, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail(f"nginx is not installed at {NGINX}")
        pytest.skip(f"nginx is not installed at {NGINX}")
    conf = render_nginx_conf(
        DEPLOY_CONF.read_text(), prefix=tmp_path, listen_port=free_port(), upstream_ports=[1, 2]
    )
    for directive in (
        "ip_hash;",
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_set_header X-Real-IP $remote_addr;",
        "proxy_read_timeout 86400s;",
        "proxy_buffering off;",
        "proxy_next_upstream error timeout;",
        "zone cowrite 64k;",
        "server 127.0.0.1:1 max_fails=1 fail_timeout=5s;",
        "server 127.0.0.1:2 max_fails=1 fail_timeout=5s;",
        # A session's requests go to the instance named in its sid, only.
        "map $arg_sid $cowrite_upstream {",
        '"~^i1\\.[A-Za-z0-9_-]+$"  cowrite_i1;',
        '"~^i2\\.[A-Za-z0-9_-]+$"  cowrite_i2;',
        "upstream cowrite_i1 { server 127.0.0.1:1; }",
        "upstream cowrite_i2 { server 127.0.0.1:2; }",
        "proxy_pass http://$cowrite_upstream;",
        "worker_processes 4;",
    ):
        assert directive in conf, directive
    (tmp_path / "nginx.conf").write_text(conf)
    done = subprocess.run(
        [NGINX, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()


async def test_health_passes_through_nginx(cluster: Cluster) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        for path, body in (("/healthz", b"ok"), ("/readyz", b"ready")):
            async with http.get(cluster.url + path) as resp:
                assert resp.status == 200 and await resp.read() == body, path
        async with http.get(cluster.url + "/elsewhere") as resp:
            assert resp.status == 404


async def test_editors_spread_over_three_instances_share_one_log(cluster: Cluster) -> None:
    subnets = await addresses_by_instance(cluster)
    used = [inst for inst, nets in subnets.items() if nets]
    assert len(used) >= 2, f"ip_hash sent 24 /24s to fewer than 2 instances: {subnets}"
    doc = "doc-scaleout"
    # Per instance: one Node editor and one Python editor, transports alternating
    # so that both clients use both transports somewhere.
    node_specs: list[dict[str, Any]] = []
    py_specs: list[tuple[str, str, list[str]]] = []
    expected_instance: dict[str, str] = {}
    for k, inst in enumerate(used):
        net = subnets[inst][0]
        node_t = ["polling"] if k % 2 else ["websocket"]
        py_t = ["websocket"] if k % 2 else ["polling"]
        node_specs.append({"label": f"n{k}", "sourceIp": f"{net}.1", "transports": node_t})
        py_specs.append((f"p{k}", f"{net}.2", py_t))
        expected_instance[f"{net}.1"] = expected_instance[f"{net}.2"] = inst
    node = NodeEditors(cluster.url, doc, node_specs)
    pys = [PyEditor(label, cluster.url, ip, t, doc) for label, ip, t in py_specs]
    try:
        await node.start()
        # Roles come from the token's docs claim; the first join creates the document.
        await asyncio.gather(node.connect(), *(p.connect() for p in pys))
        labels = [s["label"] for s in node_specs] + [p.label for p in pys]
        total = PER_EDITOR * len(labels)
        await asyncio.gather(
            node.edit(PER_EDITOR, 0.01, 4, 40.0),
            *(p.edit(PER_EDITOR, 0.01, 4, 40.0) for p in pys),
        )
        await asyncio.gather(node.wait_head(total, 15.0), *(p.wait_head(total, 15.0) for p in pys))
        reports = await node.reports() + [await p.report() for p in pys]
    finally:
        for p in pys:
            await p.close()
        await node.close()
    expected_ids = {f"{label}-{i}" for label in labels for i in range(PER_EDITOR)}
    log = check_reports(reports, expected_ids, allow_reconnects=False)
    assert len(log) == total

    # Which instance served whom: nginx's access log (every polling request and
    # every WebSocket) and each instance's own log of accepted connections.
    served = cluster.sessions_by_client()
    for ip, inst in expected_instance.items():
        assert served.get(ip) == {inst}, f"{ip} was served by {served.get(ip)}, expected {inst}"
    assert len({i for s in served.values() for i in s}) >= 2
    for r in reports:
        inst = cluster.by_id(expected_instance[r["sourceIp"]])
        seen = [address for user, address in inst.connections() if user == r["label"]]
        assert seen, f"{r['label']} is not in {inst.instance_id}'s log of connections"
        # The instance trusts nginx (--trusted-proxy 127.0.0.0/8): the address
        # it records is the client's own (X-Real-IP / X-Forwarded-For), not nginx's.
        if seen[0] is not None:
            assert seen == [r["sourceIp"]], f"{r['label']}: {inst.instance_id} saw {seen}"
    polling = [r for r in reports if r["transports"] == ["polling"]]
    assert polling, "no long-polling editor"
    print(
        f"\n{len(reports)} editors on {sorted(set(expected_instance.values()))}, "
        f"{total} operations, polling editors {[r['label'] for r in polling]}"
    )
