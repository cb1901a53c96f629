"""Plain Python install: torch is not imported at build time (install it first, for your platform)."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "fused_rnn" / "__init__.py").read_text()).group(1)

setup(
    name="fused_rnn",
    version=VERSION,
    description="Recurrent networks as fused GPU kernels (Triton) for PyTorch",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fused_rnn", "fused_rnn.*"]),
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.4",
        "numpy",  # the Triton interpreter (CPU runs of the kernels) needs it
        "triton>=3.0; platform_system == 'Linux'",
    ],
    extras_require={"test": ["pytest>=7", "torchinfo"]},
)
