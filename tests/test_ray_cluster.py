"""A study on a two-node Ray cluster on this machine that loses its second node mid-study: every run exactly once.

Both nodes are `ray start` processes on a loopback address (127.0.0.2: Ray replaces 127.0.0.1 and localhost with the
machine's network address, not the rest of 127.0.0.0/8), so no traffic leaves the loopback interface. Each node runs in
its own session; the test kills the second node's whole process tree (raylet, workers, the run's kernel) as a machine
that dies would lose them, and tears down only the processes it started.
Every test that starts Ray lives in this file: `make test` runs it on its own after the other files (which run in two
processes), so no two Ray instances start side by side on a loaded machine."""
import contextlib, json, os, socket, subprocess, sys, tempfile, threading, time, shutil
from collections import Counter
from pathlib import Path
import pandas as pd, psutil, pytest

ray = pytest.importorskip('ray')
from test_sweep import toy_notebook   # noqa: E402
from cellnb.sweep import (StudyConfig, run_study, _launch_once, _ray_init_kw, _loopback_ip, RAY_LAUNCH,   # noqa: E402
                          RAY_RETRIES, _run_env)

pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'), reason="the nodes listen on 127.0.0.2, a loopback address on Linux only")

RAY = Path(sys.executable).parent/'ray'
IP = _loopback_ip()
NODE_START_S = 240    # seconds for a node to start on a busy machine; a node that fails to start is started again
NODE_TRIES = 3

# The experiment-notebook contract (parameters, rows written to `result_file`) with an execution log: every kernel that
# starts a run appends `start`, every one that finishes appends `finish`, so a run executed twice shows.
LOGGED = '''import os, time, json
from pathlib import Path
log = Path(out_dir)/'executions.log'
with open(log, 'a') as f: f.write(f"start {run_id} {os.getpid()}\\n")
time.sleep(4)
rows = [dict(run_id=run_id, dataset=dataset, model=model, family='scratch', protocol=protocol, flag_limit=flag_limit,
             seed=seed, condition=c, sigma=s, accuracy=0.5, status='ok') for c, s in [('clean', 0.0), ('post', 1.6)]]
p = Path(out_dir)/'runs'/run_id/result_file
p.with_suffix('.tmp').write_text(json.dumps(rows)); os.replace(p.with_suffix('.tmp'), p)
with open(log, 'a') as f: f.write(f"finish {run_id} {os.getpid()}\\n")'''

def logged_notebook(path): return toy_notebook(path, LOGGED)

def executions(study) -> list:
    p = Path(study)/'executions.log'
    lines = p.read_text().splitlines() if p.exists() else []
    return [l.split() for l in lines if len(l.split()) == 3]   # a line being written is left for the next look

# ---------------------------------------------------------------- a cluster of `ray start` processes
def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks: s.bind(('127.0.0.1', 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks: s.close()
    return ports

def _tree(proc) -> list:
    "The processes of a node: its `ray start`, everything below it and everything in its session (what a dead machine loses)."
    try: root = psutil.Process(proc.pid)
    except psutil.NoSuchProcess: return []
    found = {p.pid: p for p in [root] + root.children(recursive=True)}
    for p in psutil.process_iter():
        try:
            if p.pid not in found and os.getsid(p.pid) == proc.pid: found[p.pid] = p
        except (ProcessLookupError, PermissionError, psutil.Error): pass
    return list(found.values())

def _kill(proc):
    "SIGKILL every process of a node at once, and reap its `ray start`."
    for _ in range(3):   # a process started while killing is caught by the next pass
        procs = _tree(proc)
        if not procs: break
        for p in procs:
            try: p.kill()
            except psutil.Error: pass
        psutil.wait_procs(procs, timeout=10)
    proc.wait(timeout=10)

class Node:
    "One `ray start --block` process in its own session; `up` once the node has joined the cluster."
    def __init__(self, root:Path, name:str, head:str|None=None):
        self.log = root/f'{name}.log'
        p = _free_ports(7)
        args = [str(RAY), 'start', '--block', f'--node-ip-address={IP}', '--num-cpus=1', '--num-gpus=0', f'--temp-dir={root/name}',
                f'--node-manager-port={p[0]}', f'--object-manager-port={p[1]}', f'--dashboard-agent-listen-port={p[2]}',
                f'--dashboard-agent-grpc-port={p[3]}', f'--metrics-export-port={p[4]}', f'--runtime-env-agent-port={p[5]}',
                '--min-worker-port=0', '--max-worker-port=0',   # workers bind ports the system picks: no clash between two nodes
                '--object-store-memory=80000000', '--include-log-monitor=false', '--disable-usage-stats']
        if head is None:
            self.address = f'{IP}:{_free_ports(1)[0]}'
            args += ['--head', f'--port={self.address.rsplit(":", 1)[1]}', '--include-dashboard=false', '--no-monitor',
                     f'--ray-client-server-port={p[6]}']
        else: self.address, args = head, args + [f'--address={head}']
        # RAY_AUTH_MODE: left unset, a head turns Ray's token authentication on when ~/.ray/auth_token exists, but a node
        # joining it does not send the token (refused: InvalidAuthToken). This cluster lives for one test and its nodes
        # talk over loopback addresses, so it runs without tokens (Ray's servers do listen on every interface meanwhile).
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED='0', RAY_AUTH_MODE='disabled')
        env.pop('RAY_ADDRESS', None)
        with open(self.log, 'w') as f:
            self.proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_up(self, timeout:float) -> bool:
        "True once `ray start` says the node runs; False if it exited or timed out (its processes are then killed)."
        t0 = time.time()
        while time.time() - t0 < timeout:
            if 'Ray runtime started' in self.log.read_text(errors='replace'): return True
            if self.proc.poll() is not None: break
            time.sleep(0.5)
        _kill(self.proc)
        return False

    def why(self) -> str:
        "The raylet's fatal line, if it left one."
        lines = [l for f in self.log.parent.glob(f'{self.log.stem}/session_*/logs/raylet.out') for l in f.read_text(errors='replace').splitlines()]
        fatal = next((l[l.find('Check failed'):] for l in reversed(lines) if 'Check failed' in l), None)
        own = [l for l in self.log.read_text(errors='replace').splitlines() if l.strip()]
        return (fatal or (own[-1] if own else 'nothing logged'))[:300]

def start_node(root:Path, name:str, head:str|None=None) -> Node:
    for i in range(NODE_TRIES):
        node = Node(root, f'{name}{i}', head)
        if node.wait_up(NODE_START_S): return node
    pytest.fail(f"the Ray node {name} did not start in {NODE_TRIES} tries; the last one's raylet: {node.why()}")

@pytest.fixture
def cluster(tmp_path):
    "A head and a second node, 1 CPU each, on the loopback address; everything they started is killed afterwards."
    root = tmp_path/'ray'
    if len(str(root)) > 40:   # Ray's unix sockets live under the temp dir, and a socket path is limited to 107 bytes
        root = Path(tempfile.mkdtemp(prefix='cellnb-ray-'))
    root.mkdir(exist_ok=True)
    nodes = []
    try:
        nodes.append(start_node(root, 'head'))
        nodes.append(start_node(root, 'worker', head=nodes[0].address))
        yield nodes
    finally:
        for n in reversed(nodes): _kill(n.proc)
        if root != tmp_path/'ray': shutil.rmtree(root, ignore_errors=True)

def _alive_nodes(address) -> int:
    ray.init(address=address, include_dashboard=False, logging_level='ERROR', **{k: v for k, v in _ray_init_kw(address).items() if k != 'address'})
    try: return sum(n['Alive'] for n in ray.nodes())
    finally: ray.shutdown()

# ---------------------------------------------------------------- the study that loses a node
def test_study_on_two_nodes_survives_losing_one(cluster, tmp_path, monkeypatch):
    head, worker = cluster
    monkeypatch.setenv('RAY_ADDRESS', head.address)
    monkeypatch.setenv('RAY_AUTH_MODE', 'disabled')   # as the nodes
    t0 = time.time()
    while _alive_nodes(head.address) < 2:   # the second node has registered with the head
        assert time.time() - t0 < NODE_START_S, "the second Ray node never joined the head"
        time.sleep(1)
    study, nb = tmp_path/'study', logged_notebook(tmp_path/'logged.ipynb')
    cfg = StudyConfig.tiny(seeds=[0, 1, 2, 3])   # four runs, two at a time: one per node

    killed = {}
    def kill_worker_mid_study():
        "Once a run has finished and another one is half-way on the second node (started, not finished), that node dies whole."
        while 'run' not in killed and time.time() - t0 < 600:
            try: kernels = [p for p in _tree(worker.proc) if 'ipykernel' in ' '.join(p.cmdline())]
            except psutil.Error: kernels = []
            ex = executions(study)
            busy = {r for e, r, _ in ex if e == 'start'} - {r for e, r, _ in ex if e == 'finish'}
            for k in kernels:
                with contextlib.suppress(psutil.Error):
                    run = Path(k.cwd()).name   # the kernel works in its run folder
                    if run in busy and list(study.glob('runs/*/result.json')):
                        _kill(worker.proc)
                        killed.update(run=run, done_before=sorted(p.parent.name for p in study.glob('runs/*/result.json')))
                        break
            time.sleep(0.2)
    watcher = threading.Thread(target=kill_worker_mid_study, daemon=True)
    t0 = time.time()
    watcher.start()
    df = run_study(cfg, study, executor='ray', workers=2, notebook=nb, progress=False)
    seconds = time.time() - t0
    killed.setdefault('run', None)   # stops the watcher if the study ended first
    watcher.join(5)
    assert killed['run'] is not None, "the study ended before a run was executing on the second node: nothing was killed"
    assert worker.proc.poll() is not None and not _tree(worker.proc), "the second node is not dead"

    # the study finished: every run once in the table and in its folder
    runs = sorted(p.name for p in (study/'runs').iterdir())
    assert len(runs) == 4 and df.run_id.nunique() == 4 and (df.status == 'ok').all(), df
    assert len(df) == 4 * 2 and not df.duplicated(['run_id', 'condition', 'sigma']).any(), df   # two conditions per run
    table = pd.read_parquet(study/'results.parquet')
    assert sorted(table.run_id.unique()) == runs and len(table) == 8 and not table.duplicated(['run_id', 'condition', 'sigma']).any()
    for r in runs:
        assert sorted(p.name for p in (study/'runs'/r).glob('*result*')) == ['result.json'], r   # no pending or set-aside copy
        assert [row['run_id'] for row in json.loads((study/'runs'/r/'result.json').read_text())] == [r, r]

    # every run executed to its end exactly once; the killed one started twice (on the dead node, then on the head)
    ex = executions(study)
    finished, started = Counter(r for e, r, _ in ex if e == 'finish'), Counter(r for e, r, _ in ex if e == 'start')
    assert finished == {r: 1 for r in runs}, ex
    assert killed['run'] not in killed['done_before'] and started[killed['run']] == 2, (killed, ex)
    assert sum(started.values()) == 5, ex

    # a rerun into the same folder (one node left) finds nothing to do and leaves the table as it was
    again = run_study(cfg, study, executor='ray', workers=2, notebook=nb, progress=False)
    assert executions(study) == ex
    pd.testing.assert_frame_equal(again, df)
    print(f"study on two nodes, one killed mid-run: {seconds:.1f} s; killed during {killed['run']}")

# ---------------------------------------------------------------- the pieces, without a cluster
def test_a_repeated_task_does_not_run_a_finished_run_again(tmp_path):
    "Ray repeats a task whose node died, also after its run had recorded its result: the repeat returns that result."
    study, nb = tmp_path/'study', logged_notebook(tmp_path/'logged.ipynb')
    rd = study/'runs'/'r1'
    rd.mkdir(parents=True)
    (rd/'params.json').write_text(json.dumps(dict(run_id='r1', dataset='synthetic', model='cnn', protocol='scratch', flag_limit=8, seed=0)))
    kw = dict(notebook=str(nb), exec_params=dict(out_dir=str(study)), env=_run_env(study, 1))
    first = _launch_once(rd, 'launch-a', **kw)
    again = _launch_once(rd, 'launch-a', **kw)   # the same launch, repeated by Ray
    assert first['status'] == again['status'] == 'ok'
    assert [e for e, *_ in executions(study)] == ['start', 'finish']
    assert json.loads((rd/RAY_LAUNCH).read_text()) == 'launch-a'
    _launch_once(rd, 'launch-b', **kw)   # a new study launch that was asked to run it does run it
    assert [e for e, *_ in executions(study)] == ['start', 'finish'] * 2
    assert RAY_RETRIES >= 1

def test_ray_addresses_stay_on_the_loopback():
    "A local instance and a driver joining a cluster on a loopback address both use a loopback address Ray keeps."
    assert IP.startswith('127.') and IP != '127.0.0.1'   # Ray would replace 127.0.0.1 with this machine's network address
    from ray._private.services import resolve_ip_for_localhost
    assert resolve_ip_for_localhost(IP) == IP
    assert _ray_init_kw(None)['_node_ip_address'] == IP
    assert _ray_init_kw(f'{IP}:6379') == dict(address=f'{IP}:6379', _node_ip_address=IP)
    assert _ray_init_kw('auto') == dict(address='auto') and _ray_init_kw('10.1.2.3:6379') == dict(address='10.1.2.3:6379')

def test_ray_executor(tmp_path, monkeypatch):
    "A local Ray instance runs the study, on a loopback address only (Ray would turn 127.0.0.1 into the network address)."
    monkeypatch.delenv('RAY_ADDRESS', raising=False)
    addresses, real_init = [], ray.init
    def init(*a, **kw):   # what the study's instance registered as its node address
        ctx = real_init(*a, **kw)
        addresses.extend(n['NodeManagerAddress'] for n in ray.nodes())
        return ctx
    monkeypatch.setattr(ray, 'init', init)
    study = tmp_path/'study'
    df = run_study(StudyConfig.tiny(seeds=[0, 1]), study, executor='ray', workers=2, progress=False)
    assert df.run_id.nunique() == 2 and (df.status == 'ok').all(), df.error.tolist()
    assert len(df) == 2 * 2
    assert addresses and all(a.startswith('127.') for a in addresses), addresses
