"""Builds the plain C++ tests of the TF-free lattice and dense CRF headers and runs them.

The same sources are Bazel's ``//kseg_ops:permutohedral_test`` and ``//kseg_ops:dense_crf_test``;
here they run with the README's test command, on any machine with a C++17 compiler.
"""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("name", ["permutohedral_test", "dense_crf_test"])
def test_cpp_unit_tests_pass(name, tmp_path):
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        pytest.skip(f"no C++ compiler {cxx!r} to build {name}")
    binary = tmp_path / name
    source = os.path.join(ROOT, "kseg_ops", "cc", "lattice", name + ".cc")
    subprocess.run(
        [cxx, "-std=c++17", "-O2", "-Wall", "-Werror", "-I", ROOT, source, "-o", str(binary)],
        check=True,
    )
    result = subprocess.run([str(binary)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " 0 failed" in result.stdout
