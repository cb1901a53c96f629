"""The sdist and the wheel hold what an install from them needs.

Both are built offline (no build isolation: the test extra brings setuptools
and build), the wheel from the sdist as pip would, in ~2 s. What they must
hold is read from this checkout: every module, the CUDA sources (the
just-in-time build of backend="cuda" compiles them from the installed
package), the license; the sdist also the tests with their conftest and helpers.
"""

import email
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

import fused_rnn
from helpers import ROOT, run_python

pytest.importorskip("build", reason="the test extra installs build: pip install -e '.[test]'")

PACKAGE = ROOT / "fused_rnn"


def files_under(folder):
    """Paths relative to ROOT of every file under folder, less caches and build outputs."""
    return {p.relative_to(ROOT).as_posix() for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".so", ".o")}


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    # From a copy without the checkout's build state: setuptools adds every file
    # listed in an old fused_rnn.egg-info/SOURCES.txt to the sdist, which would
    # hide a file that MANIFEST.in no longer names.
    source = tmp_path_factory.mktemp("source") / "fused_rnn"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "*.egg-info", "build", "dist", "__pycache__", ".pytest_cache", ".hypothesis", ".venv"))
    out = tmp_path_factory.mktemp("dist")
    built = run_python("-m", "build", "--no-isolation", "--outdir", str(out), str(source),
                       env={"FUSED_RNN_BUILD_CUDA": None})
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    version = fused_rnn.__version__
    return out / f"fused_rnn-{version}-py3-none-any.whl", out / f"fused_rnn-{version}.tar.gz"


def test_wheel_holds_the_package_and_its_cuda_sources(dist):
    wheel, _ = dist
    names = set(zipfile.ZipFile(wheel).namelist())
    info = f"fused_rnn-{fused_rnn.__version__}.dist-info"
    package = {name for name in files_under(PACKAGE) if name.endswith(".py") or "/csrc/" in name}
    assert {n for n in package if "/csrc/" in n} >= {"fused_rnn/csrc/binding.cpp", "fused_rnn/csrc/rnn_cluster.cu"}
    assert package <= names, sorted(package - names)
    assert f"{info}/licenses/LICENSE" in names
    assert all(n.startswith(("fused_rnn/", info + "/")) for n in names), sorted(names)  # no tests/, no setup.py


def test_wheel_metadata(dist):
    wheel, _ = dist
    info = f"fused_rnn-{fused_rnn.__version__}.dist-info"
    meta = email.message_from_bytes(zipfile.ZipFile(wheel).read(f"{info}/METADATA"))
    assert meta["Name"] == "fused_rnn" and meta["Version"] == fused_rnn.__version__
    assert meta["License-Expression"] == "MIT"
    requires = meta.get_all("Requires-Dist")
    hard = [r for r in requires if "extra ==" not in r]
    assert hard == ["torch>=2.6", "numpy"], requires          # triton only with an extra
    assert any(r.startswith("triton") and 'extra == "test"' in r for r in requires)
    assert any(r.startswith("triton") and 'extra == "interpret"' in r for r in requires)


def test_sdist_holds_what_builds_and_tests_it(dist):
    _, sdist = dist
    top = f"fused_rnn-{fused_rnn.__version__}/"
    with tarfile.open(sdist) as tar:
        names = {m.name[len(top):] for m in tar.getmembers() if m.isfile()}
    wanted = files_under(PACKAGE) | files_under(ROOT / "tests") | {
        "pyproject.toml", "setup.py", "LICENSE", "README.md", "MANIFEST.in"}
    assert {"tests/conftest.py", "tests/seed_model.py", "tests/csrc_emulation.cpp",
            "fused_rnn/csrc/rnn_cluster_kernel.cuh"} <= wanted
    assert wanted <= names, sorted(wanted - names)


def test_cuda_sources_found_where_the_package_is_installed():
    """fused_rnn.cuda builds from the sources inside the package, which the wheel carries."""
    from fused_rnn import cuda
    assert all(p.is_file() and p.parent == Path(fused_rnn.__file__).parent / "csrc" for p in cuda.SOURCES)
