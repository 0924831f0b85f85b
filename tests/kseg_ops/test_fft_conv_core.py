"""Builds the TF-free FFT correlation core's C++ check and runs it (brute-force reference)."""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_fft_core_matches_brute_force(tmp_path):
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        pytest.skip(f"no C++ compiler {cxx!r} to build the core check")
    binary = tmp_path / "fft_conv_core_test"
    source = os.path.join(ROOT, "tests", "kseg_ops", "test_fft_conv_core.cc")
    subprocess.run(
        [cxx, "-std=c++17", "-O1", "-Wall", "-Werror", "-I", ROOT, source, "-o", str(binary)],
        check=True,
    )
    result = subprocess.run([str(binary)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "ALL OK" in result.stdout
    # Every radix (2, 3, 4, 5) and forced multi-tile plans were exercised.
    assert result.stdout.count("\nok ") > 300
