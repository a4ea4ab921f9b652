import shutil

import pytest

import serket  # noqa: F401  (first: sets the thread policy before torch loads)
import torch

from serket.messages import Categorical, Samples
from serket.module import Module, Port


class NoisyProjection(Module):
    """A tiny module for graph tests: z = x @ W + noise; W learns towards its prior's mean."""

    def __init__(self, name, x_dim=4, z_dim=2, *, seed=0, device="cpu"):
        super().__init__(name, seed=seed, device=device)
        self.x_dim, self.z_dim = x_dim, z_dim
        self.weight = torch.nn.Parameter(torch.randn(x_dim, z_dim, generator=torch.Generator().manual_seed(seed)))
        self.z = None

    def ports(self):
        return {"x": Port("x", accepts=("samples",), size=self.x_dim),
                "z": Port("z", sends=("samples",), accepts=("gaussian",), size=self.z_dim)}

    def update(self):
        x = self.inbox["x"].values
        with torch.no_grad():
            z = x @ self.weight + 0.1 * torch.randn(x.shape[0], self.z_dim, generator=self.generator, device=self.device)
            if "z" in self.inbox:
                z = 0.5 * (z + self.inbox["z"].mean)
        self.z = z

    def publish(self):
        return {} if self.z is None else {"z": Samples(self.z)}


class Categoriser(Module):
    """A tiny upper module: categories by the sign pattern of z's first coordinate, sends priors."""

    def __init__(self, name, z_dim=2, k=2, *, seed=0, device="cpu"):
        super().__init__(name, seed=seed, device=device)
        self.z_dim, self.k = z_dim, k
        self.probs = None

    def ports(self):
        return {"x": Port("x", accepts=("samples",), sends=("gaussian",), size=self.z_dim),
                "c": Port("c", accepts=("categorical",), sends=("categorical",), size=self.k)}

    def update(self):
        z = self.inbox["x"].values
        logits = torch.stack([z[:, 0], -z[:, 0]], 1) + 0.01 * torch.randn(z.shape[0], 2, generator=self.generator)
        if "c" in self.inbox:
            logits = logits + torch.log(self.inbox["c"].probs)
        self.probs = torch.softmax(logits, 1)

    def publish(self):
        if self.probs is None:
            return {}
        z = self.inbox["x"].values
        return {"x": __import__("serket").messages.Gaussian(torch.zeros_like(z), torch.ones_like(z)),
                "c": Categorical(self.probs)}

    def predict(self):
        return None if self.probs is None else self.probs.argmax(1)


@pytest.fixture
def toy_modules():
    return NoisyProjection, Categoriser


@pytest.fixture
def toy_chain():
    """``build(feedback=True, n_items=20)``: observation -> NoisyProjection -> Categoriser, the
    projection's latent tied to the categoriser head-to-tail."""
    from serket.connections import Observation
    from serket.graph import Graph

    def build(feedback=True, n_items=20):
        g = Graph(seed=0)
        g.add(Observation("obs", torch.randn(n_items, 4)))
        g.add(NoisyProjection("proj"))
        g.add(Categoriser("cat"))
        g.observe("obs", "proj.x")
        g.head_to_tail(upper="cat.x", lower="proj.z", feedback=feedback)
        return g

    return build


@pytest.fixture
def load_example():
    """Import a script from examples/ by file name, as a module (examples are not a package)."""
    return lambda filename: load_script("examples", filename)


@pytest.fixture
def load_benchmark():
    """Import a script from benchmarks/ by file name, as a module (not a package either)."""
    return lambda filename: load_script("benchmarks", filename)


def load_script(folder: str, filename: str):
    """The script ``folder/filename`` of the repository, imported as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / folder / filename
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "requires_program(name, ...): needs these system programs; skipped, saying which, "
                   "where one is not installed (CI installs them)")


def pytest_runtest_setup(item):
    for marker in item.iter_markers("requires_program"):
        missing = [name for name in marker.args if shutil.which(name) is None]
        if missing:
            pytest.skip(f"needs the system program(s) {', '.join(missing)}, not installed here "
                        f"(apt-get install {' '.join(missing)})")


@pytest.fixture
def golden_figures():
    """Check a benchmark's ``results.json`` against the pinned ``--quick`` figures
    (tests/golden/quick_figures.json): every configuration and seed it ran, figure for figure."""
    import json
    import sys
    from pathlib import Path

    golden = Path(__file__).resolve().parent / "golden"
    sys.path.insert(0, str(golden))
    try:
        from pin_quick_figures import figures
    finally:
        sys.path.remove(str(golden))
    pinned = json.loads((golden / "quick_figures.json").read_text())["figures"]

    def check(benchmark, results_json):
        measured = figures(json.loads(Path(results_json).read_text()))
        for config, by_seed in measured.items():
            for seed, values in by_seed.items():
                assert values == pinned[benchmark][config][seed], (benchmark, config, seed)
        return measured

    return check
