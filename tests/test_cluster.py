"""Studies on a Ray cluster of several nodes on this machine (`ray.cluster_utils.Cluster`): a
node lost mid-run re-queues its run, which resumes from its checkpoint elsewhere and ends with
the files of an undisturbed run; a STUDY_DIR a node cannot see is refused before anything runs
(issue 21 item 5). Slow: a cluster, two studies and a node's death take a minute or two."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from helpers import EXPERT

from seqeval.errors import UserError
from seqeval.sweep import SweepOptions, run_study
from seqeval.worker import node_file

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")]

# One run, five evaluations (and checkpoints) of 200 gradient steps each: the node dies after
# the first checkpoint, well before the last.
SPEC = f"""
[study]
agents = ['bc']
datasets = ['{EXPERT}']
[protocol]
initial_size = 9000
increment = 20
steps_per_increment = 20
eval_every = 200
eval_episodes = 1
batch_size = 32
no_prequential = true
[agent]
hidden_dims = [32, 32]
"""
TIMING = ("time", "per_second", "seconds")  # what may differ between two runs of one study


@pytest.fixture(scope="module")
def cluster():
    """A head node without CPUs (the driver's) and two worker nodes of one CPU each."""
    from ray.cluster_utils import Cluster

    # Ray's files in a short folder of our own (its socket paths must stay short), not /tmp/ray.
    temp = Path(tempfile.mkdtemp(prefix="seqeval-cluster-"))
    (temp / "ray").mkdir()
    previous = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = str(temp)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "temp_dir": str(temp / "ray"),
        "object_store_memory": 80 * 1024**2})
    nodes = [cluster.add_node(num_cpus=1, object_store_memory=80 * 1024**2) for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        yield cluster, nodes
    finally:
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        if previous is None:
            del os.environ["RAY_TMPDIR"]
        else:
            os.environ["RAY_TMPDIR"] = previous


def _comparable(path: Path) -> object:
    """A run file's content without what measures time."""
    if path.suffix == ".json":
        return _drop_timing(json.loads(path.read_text()))
    if path.suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        return [{k: v for k, v in row.items() if not any(t in k for t in TIMING)}
                for row in rows]
    return path.read_bytes()


def _drop_timing(value: object) -> object:
    if isinstance(value, dict):
        return {k: _drop_timing(v) for k, v in value.items()
                if not any(t in k for t in TIMING)}
    return value


def _files(run_dir: Path) -> dict[str, object]:
    return {p.relative_to(run_dir).as_posix(): _comparable(p)
            for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != "run.lock"}


def test_a_lost_node_requeues_its_run_which_resumes_to_the_undisturbed_files(
        store, tmp_path, cluster):
    cluster_, nodes = cluster
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    options = SweepOptions(address=cluster_.address, max_parallel=1, progress=False)

    disturbed = tmp_path / "disturbed"
    killed: dict[str, str] = {}

    def remove_the_node_running_the_run() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                [record] = json.loads((disturbed / "study.json").read_text())["runs"]
                node = json.loads(node_file(disturbed / "logs" / (
                    record["id"].replace("/", "__") + ".log")).read_text())
            except (OSError, ValueError):
                continue
            if list((disturbed / record["path"] / "checkpoint").glob("state-*.npz")):
                victim = next(n for n in nodes if n.node_id == node["id"])
                cluster_.remove_node(victim, allow_graceful=False)
                killed["node"] = node["id"]
                return

    watcher = threading.Thread(target=remove_the_node_running_the_run, daemon=True)
    watcher.start()
    state = run_study(spec, disturbed, options)
    watcher.join(timeout=5)
    assert "node" in killed, "the run finished before its node could be removed"
    [record] = state["runs"]
    assert record["status"] == "complete" and record["requeued"] == 1
    assert record["attempts"] == 1  # a lost node is not the run's failure
    assert record["node"]["id"] != killed["node"]  # it finished on the other node
    log = (disturbed / "logs" / (record["id"].replace("/", "__") + ".log")).read_text()
    assert log.count("seqeval sweep: bc on") == 2  # started twice, resumed once

    undisturbed = tmp_path / "undisturbed"
    again = run_study(spec, undisturbed, options)
    [reference] = again["runs"]
    assert reference["status"] == "complete" and reference["path"] == record["path"]
    assert _files(disturbed / record["path"]) == _files(undisturbed / reference["path"])
    assert (disturbed / "runs.csv").read_text().count("\n") == 2


def test_a_study_dir_a_node_cannot_see_is_refused_before_anything_runs(
        store, tmp_path, cluster):
    """A worker node in its own mount namespace, where the study's folder is another (empty)
    file system: its probe file lands there, and the driver cannot read it."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a node with its own view of the file system needs unshare (root)")
    cluster_, _ = cluster
    shared = tmp_path / "shared"
    shared.mkdir()
    out = shared / "study"
    ray_command = Path(sys.executable).with_name("ray")
    script = (f"mount -t tmpfs tmpfs {shared} && mkdir {out} && exec {ray_command} start "
              f"--address {cluster_.address} --num-cpus 1 --resources '{{\"blind\": 1}}' "
              "--block --disable-usage-stats")
    blind = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import ray

        ray.init(address=cluster_.address)
        try:
            deadline = time.monotonic() + 120
            while not any(n["Alive"] and "blind" in n["Resources"] for n in ray.nodes()):
                assert time.monotonic() < deadline, "the node did not join"
                time.sleep(0.5)
        finally:
            ray.shutdown()
        spec = tmp_path / "spec.toml"
        spec.write_text(SPEC)
        with pytest.raises(UserError) as refused:
            run_study(spec, out, SweepOptions(address=cluster_.address, progress=False))
        message = str(refused.value)
        assert message.startswith(f"study directory '{out}' is not shared with the Ray "
                                  "cluster: node ")
        assert "writes to a folder of that name this machine cannot see" in message
        assert "put --out on storage every node mounts at the same path" in message
        assert not out.exists()  # nothing left behind
    finally:
        blind.terminate()
        blind.wait(timeout=60)
