"""Installs kseg and the compiled kseg_ops op library.

Build against the TensorFlow you already have (the op must match its ABI):

    pip install "tensorflow-cpu~=2.21.0"
    pip install --no-build-isolation -e ".[test]"
"""

from setuptools import find_packages, setup

TF_VERSION = "~=2.21.0"

setup(
    name="kseg",
    version="0.1.0",
    description="Semantic segmentation for Keras 3 / TensorFlow: models, dense CRF, FFT conv, data, metrics, export",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["kseg", "kseg.*", "kseg_ops", "kseg_ops.*"]),
    include_package_data=True,
    package_data={"kseg_ops": ["*.so"]},
    install_requires=[
        "keras>=3.10",
        "numpy>=1.26",
        "pillow>=10",
        "matplotlib>=3.7",
        "tensorboard",  # keras-tuner and the TensorBoard callback import it
    ],
    extras_require={
        "cpu": [f"tensorflow-cpu{TF_VERSION}"],
        "gpu": [f"tensorflow[and-cuda]{TF_VERSION}"],
        "tuner": ["keras-tuner>=1.4"],
        "test": [
            "pytest>=8",
            "pybind11",
            "keras-tuner>=1.4",
            "scikit-image",
            "pydensecrf2",
        ],
    },
    entry_points={"console_scripts": ["kseg=kseg.cli.main:main"]},
    zip_safe=False,
)
