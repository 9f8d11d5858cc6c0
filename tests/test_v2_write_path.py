"""``run`` on InfluxDB 2 writes with one plain HTTP POST: it never imports influxdb-client (its 374 modules
are 10 MB) nor numpy (which influxdb-client's point module pulls in when it is installed, +11.6 MB, as on
many Raspberry Pi system Pythons).  A stand-in numpy on the path records any import of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers.fake_meter import DUTCH_DSMR5, fixture, restamped_series
from helpers.influx_servers import V2_TOKEN, InfluxServer, V2Proxy

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import json, sys
from p1logger.cli import main
status = main(["run"])
heavy = ("influxdb_client", "numpy", "urllib3", "pandas", "reactivex", "dateutil")
loaded = sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in heavy})
sys.stderr.write("\\n" + json.dumps({"status": status, "loaded": loaded}) + "\\n")
"""


def test_a_v2_run_imports_neither_influxdb_client_nor_numpy(tmp_path: Path, v2_proxy: V2Proxy,
                                                             influxd: InfluxServer, influx_db: str) -> None:
    source = tmp_path / "dutch.txt"
    source.write_bytes(b"".join(restamped_series(fixture(DUTCH_DSMR5), 5)))
    stand_in = tmp_path / "site" / "numpy"
    stand_in.mkdir(parents=True)
    marker = tmp_path / "numpy-imported"
    (stand_in / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P1_", "INFLUX_"))}
    env.update(P1_SOURCE=f"file:{source}", INFLUX_API="v2", INFLUX_URL=v2_proxy.url, INFLUX_ORG=v2_proxy.org,
               INFLUX_BUCKET=influx_db, INFLUX_TOKEN=V2_TOKEN, P1_SPOOL_DIR=str(tmp_path / "spool"),
               PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(REPO)]))
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    report = json.loads(done.stderr.rstrip().rsplit("\n", 1)[-1])
    assert report["status"] == 0, done.stderr
    assert report["loaded"] == []
    assert not marker.exists()
    assert influxd.count(influx_db, "energy") == 5
    assert [w.status for w in v2_proxy.writes()] and set(w.status for w in v2_proxy.writes()) == {204}
