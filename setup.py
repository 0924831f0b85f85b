"""Installs kseg and the compiled kseg_ops op library.

Build against the TensorFlow you already have (the op must match its ABI):

    pip install "tensorflow-cpu~=2.21.0"
    pip install --no-build-isolation -e ".[test]"

The op library is compiled from the sources listed in ``kseg_ops/sources.bzl`` (the same list
Bazel uses). CUDA kernels are compiled too when ``KSEG_OPS_CUDA=1``, or when the installed
TensorFlow is built with CUDA and ``nvcc`` is found (``KSEG_OPS_CUDA=0`` turns them off).
"""

import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

TF_VERSION = "~=2.21.0"
HERE = os.path.dirname(os.path.abspath(__file__))
OPS_LIBRARY = "kseg_ops._kseg_ops"
VERSION_SUFFIX = ".tf_version"  # kseg_ops/_loader.py reads it
# Runs on every x86-64-v2 machine (SSE4.2); never -march=native, the wheel travels.
CPU_ARCH_FLAGS = ["-march=x86-64-v2"] if os.uname().machine == "x86_64" else []


def _read_sources():
    namespace = {}
    with open(os.path.join(HERE, "kseg_ops", "sources.bzl"), encoding="utf-8") as f:
        exec(f.read(), namespace)
    return (
        namespace["OPS_CPU_SRCS"],
        namespace["OPS_GPU_SRCS"],
        namespace["OPS_HDRS"] + namespace.get("OPS_GPU_HDRS", []),
    )


def _tensorflow_build_info():
    # Asked of a subprocess so that setup.py itself never imports TensorFlow.
    code = (
        "import json, tensorflow as tf;"
        "print(json.dumps({'version': tf.__version__,"
        "'cflags': tf.sysconfig.get_compile_flags(),"
        "'lflags': tf.sysconfig.get_link_flags(),"
        "'include': tf.sysconfig.get_include(),"
        "'cuda': tf.test.is_built_with_cuda()}))"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(
            "building kseg_ops needs TensorFlow installed in this Python "
            f"({sys.executable}); install it first (pip install 'tensorflow-cpu{TF_VERSION}') and "
            "build with 'pip install --no-build-isolation .'.\n" + result.stderr[-2000:]
        )
    import json

    return json.loads(result.stdout.strip().splitlines()[-1])


def _run(command, what):
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {result.returncode}):\n  {' '.join(command)}\n"
            f"{result.stdout}{result.stderr}"
        )


def _want_cuda(tf_info):
    flag = os.environ.get("KSEG_OPS_CUDA", "").strip()
    nvcc = (
        os.environ.get("NVCC")
        or shutil.which("nvcc")
        or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    )
    if flag == "1":
        if nvcc is None:
            raise RuntimeError("KSEG_OPS_CUDA=1 but no nvcc was found (set NVCC=/path/to/nvcc)")
        return nvcc
    if flag == "0" or not tf_info["cuda"]:
        return None
    return nvcc


# g++ flags that nvcc either sets itself above or does not understand.
_HOST_ONLY_FLAGS = (
    "-fPIC",
    "-O3",
    "-DNDEBUG",
    "-Wno-interference-size",
    "-Wno-deprecated-declarations",
)


def _cuda_home(nvcc):
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    # nvcc may be a wrapper script outside the toolkit (e.g. /usr/local/bin/nvcc).
    for home in (os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "/usr/local/cuda"):
        if os.path.isfile(os.path.join(home, "include", "cuda_runtime.h")):
            return home
    raise RuntimeError(
        f"cannot find the CUDA toolkit of {nvcc} (no include/cuda_runtime.h beside it); "
        "set CUDA_HOME=/path/to/cuda"
    )


class BuildOps(build_ext):
    """Compiles kseg_ops/_kseg_ops.so with g++ (and nvcc) using TensorFlow's own flags."""

    def build_extension(self, ext):
        if ext.name != OPS_LIBRARY:
            return super().build_extension(ext)
        cpu_srcs, gpu_srcs, hdrs = _read_sources()
        tf_info = _tensorflow_build_info()
        cxx = os.environ.get("CXX", "g++")
        nvcc = _want_cuda(tf_info)
        out_path = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(out_path), exist_ok=True)
        build_dir = tempfile.mkdtemp(prefix="kseg_ops_build_")
        cflags = tf_info["cflags"] + [
            "-I" + HERE,
            "-fPIC",
            "-O3",
            "-DNDEBUG",
            "-Wno-interference-size",
            "-Wno-deprecated-declarations",
        ]
        objects, extra_libs = [], []
        try:
            if nvcc:
                cuda_home = _cuda_home(nvcc)
                # The CPU wheel ships no CUDA headers; TF's GPU headers include them through
                # third_party/gpus/cuda/include, so point that path at the toolkit's headers.
                overlay = os.path.join(build_dir, "cuda_overlay")
                link_dir = os.path.join(overlay, "third_party", "gpus", "cuda")
                os.makedirs(link_dir)
                os.symlink(os.path.join(cuda_home, "include"), os.path.join(link_dir, "include"))
                cflags = cflags + [
                    "-DGOOGLE_CUDA=1",
                    "-I" + overlay,
                    "-I" + os.path.join(cuda_home, "include"),
                ]
                for i, src in enumerate(gpu_srcs):
                    obj = os.path.join(build_dir, f"gpu_{i}.o")
                    _run(
                        [
                            nvcc,
                            "-c",
                            os.path.join(HERE, src),
                            "-o",
                            obj,
                            "-x",
                            "cu",
                            "--expt-relaxed-constexpr",
                            "-Xcompiler",
                            "-fPIC",
                            "-O3",
                            "-DNDEBUG",
                            "-Wno-deprecated-gpu-targets",
                            "-Xcudafe",
                            "--diag_suppress=esa_on_defaulted_function_ignored",
                        ]
                        + [f for f in cflags if f not in _HOST_ONLY_FLAGS],
                        f"nvcc compile of {src}",
                    )
                    objects.append(obj)
                cudart = os.path.join(cuda_home, "lib64", "libcudart_static.a")
                extra_libs = [cudart, "-ldl", "-lrt", "-lpthread"]
            # The sources compile in parallel (each g++ takes about 1 GB with TensorFlow's headers);
            # KSEG_OPS_BUILD_JOBS caps the number of compilers at once.
            jobs_text = os.environ.get("KSEG_OPS_BUILD_JOBS", "0").strip() or "0"
            if not jobs_text.isdigit():
                raise RuntimeError(
                    f"KSEG_OPS_BUILD_JOBS must be a whole number, received {jobs_text!r}"
                )
            jobs = int(jobs_text) or os.cpu_count() or 1
            cpu_objects = [os.path.join(build_dir, f"cpu_{i}.o") for i in range(len(cpu_srcs))]
            with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
                compiles = [
                    pool.submit(
                        _run,
                        [cxx, "-c", os.path.join(HERE, src), "-o", obj] + cflags + CPU_ARCH_FLAGS,
                        f"compile of {src}",
                    )
                    for src, obj in zip(cpu_srcs, cpu_objects)
                ]
                for done in compiles:
                    done.result()  # re-raises the first failed compile with its output
            objects.extend(cpu_objects)
            _run(
                [cxx, "-shared", "-o", out_path] + objects + tf_info["lflags"] + extra_libs,
                "link of " + os.path.basename(out_path),
            )
        finally:
            shutil.rmtree(build_dir, ignore_errors=True)
        # Recorded so the loader can refuse a library built for another TensorFlow.
        with open(os.path.join(os.path.dirname(out_path), "_kseg_ops" + VERSION_SUFFIX), "w") as f:
            f.write(tf_info["version"] + "\n")

    def get_ext_filename(self, ext_name):
        if ext_name in (OPS_LIBRARY, OPS_LIBRARY.rsplit(".", 1)[1]):
            # A plain name: the op library is loaded by tf.load_op_library, not imported.
            return os.path.join(*ext_name.split(".")) + ".so"
        return super().get_ext_filename(ext_name)

    def copy_extensions_to_source(self):
        # Editable installs: the version record travels with the library.
        super().copy_extensions_to_source()
        build_py = self.get_finalized_command("build_py")
        package_dir = build_py.get_package_dir("kseg_ops")
        self.copy_file(
            os.path.join(self.build_lib, "kseg_ops", "_kseg_ops" + VERSION_SUFFIX),
            os.path.join(package_dir, "_kseg_ops" + VERSION_SUFFIX),
            level=self.verbose,
        )


def _ops_extension():
    cpu_srcs, _, hdrs = _read_sources()
    return Extension(OPS_LIBRARY, sources=list(cpu_srcs), depends=list(hdrs))


setup(
    name="kseg",
    version="0.1.0",
    description="Semantic segmentation for Keras 3 / TensorFlow: models, dense CRF, FFT conv, data, metrics, export",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["kseg", "kseg.*", "kseg_ops", "kseg_ops.*"]),
    include_package_data=True,
    package_data={"kseg_ops": ["*.so", "*.tf_version"]},
    ext_modules=[_ops_extension()],
    cmdclass={"build_ext": BuildOps},
    install_requires=[
        # Published safe_mode bypasses and loader flaws fixed by 3.14: CVE-2025-1550 (< 3.9),
        # CVE-2025-8747 and CVE-2025-9906 (< 3.11.0), CVE-2025-9905 (HDF5, < 3.11.3),
        # GHSA-hqp4-2352-xf5r (archive path traversal, < 3.14.0).
        "keras>=3.14",
        "numpy>=1.26",
        "pillow>=10",
        "matplotlib>=3.7",
        "scipy>=1.10",  # SBD's and SIFT Flow's .mat label files
        "tensorboard",  # keras-tuner and the TensorBoard callback import it
        "keras-tuner>=1.4",  # kseg.tune, kseg tune
    ],
    extras_require={
        "cpu": [f"tensorflow-cpu{TF_VERSION}"],
        "gpu": [f"tensorflow[and-cuda]{TF_VERSION}"],
        "tuner": ["keras-tuner>=1.4"],  # now a dependency; the extra stays for old commands
        # TF Serving warm-up requests. It requires the full "tensorflow" wheel by name: beside
        # tensorflow-cpu install it with pip install --no-deps "tensorflow-serving-api~=2.21.0".
        "serving": [f"tensorflow-serving-api{TF_VERSION}"],
        # TFLite metadata also needs `pip install --no-deps tflite-support` (its protobuf pin
        # conflicts with TensorFlow's) and Debian's libusb-1.0-0.
        "mobile": ["mediapipe>=1.2"],
        "onnx": ["tf2onnx>=1.17", "onnx", "onnxruntime"],
        # kseg.data.tfds (TensorFlow Datasets) and the SIFT Flow .mat labels
        "datasets": ["tensorflow-datasets>=4.9", "scipy"],
        # kseg.classic: thresholding, clustering, graph-based baselines
        "classic": ["scikit-image>=0.23", "scikit-learn"],
        # COCO-format masks (kseg.data.coco_instances) and kseg.metrics.coco_evaluate
        "coco": ["pycocotools>=2.0.7"],
        "test": [
            "mediapipe>=1.2",
            "tf2onnx>=1.17",
            "onnx",
            "onnxruntime",
            "pytest>=8",
            "pytest-xdist>=3.5",
            "pybind11",
            "keras-tuner>=1.4",
            "scikit-image>=0.23",
            "tensorflow-datasets>=4.9",
            "scikit-learn",
            "pydensecrf2",
            "pycocotools>=2.0.7",
            "ruff==0.17.6",
            "clang-format==23.1.5",
        ],
    },
    entry_points={"console_scripts": ["kseg=kseg.cli.main:main"]},
    zip_safe=False,
)
