"""Build hook: copy the CUDA sources from kernels/ into the built package as xpnn/_kernels/ (and the CPU kernels'
sources, kernels/cpu/*.cpp, as xpnn/_kernels/cpu/), so that a non-editable install finds them (xpnn._cuda.sources
and xpnn.functional.cpu_kernels look there first, then in <repo>/kernels).
All other metadata lives in pyproject.toml."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithKernels(build_py):
    def run(self):
        super().run()
        src = Path(__file__).resolve().parent / "kernels"
        dst = Path(self.build_lib) / "xpnn" / "_kernels"
        dst.mkdir(parents=True, exist_ok=True)
        for f in sorted(src.glob("*.cu")) + sorted(src.glob("*.cuh")):
            shutil.copy2(f, dst / f.name)
        (dst / "cpu").mkdir(exist_ok=True)
        for f in sorted((src / "cpu").glob("*.cpp")):
            shutil.copy2(f, dst / "cpu" / f.name)


setup(cmdclass={"build_py": BuildPyWithKernels})
