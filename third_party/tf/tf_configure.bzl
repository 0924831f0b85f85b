"""Repository rule exposing the pip-installed TensorFlow as @local_config_tf.

Runs `$PYTHON_BIN_PATH -c "import tensorflow"` (python3 on the PATH when unset) to find the
headers, `libtensorflow_framework.so.2` and the compile definitions, then symlinks them into
the repository. Works offline; re-run after changing TensorFlow with `bazel sync --configure`
or a different `--repo_env=PYTHON_BIN_PATH=...`.
"""

_QUERY = """
import tensorflow as tf
print("version=" + tf.__version__)
print("include=" + tf.sysconfig.get_include())
print("lib=" + tf.sysconfig.get_lib())
print("cflags=" + " ".join(tf.sysconfig.get_compile_flags()))
"""

def _python(ctx):
    python = ctx.os.environ.get("PYTHON_BIN_PATH", "")
    if python:
        return python
    found = ctx.which("python3") or ctx.which("python")
    if not found:
        fail("@local_config_tf: no python found; pass --repo_env=PYTHON_BIN_PATH=/path/to/python")
    return str(found)

def _tf_configure_impl(ctx):
    python = _python(ctx)
    result = ctx.execute([python, "-c", _QUERY], environment = {"TF_CPP_MIN_LOG_LEVEL": "3"})
    if result.return_code != 0:
        fail("@local_config_tf: `%s -c 'import tensorflow'` failed; install TensorFlow in that " %
             python + "Python or pass --repo_env=PYTHON_BIN_PATH=...\n" + result.stderr)
    info = {}
    for line in result.stdout.splitlines():
        if "=" in line:
            key, _, value = line.partition("=")
            info[key.strip()] = value.strip()
    defines = []
    for flag in info["cflags"].split(" "):
        if flag.startswith("-D"):
            defines.append(flag[2:])
    ctx.symlink(info["include"], "include")
    ctx.symlink(info["lib"] + "/libtensorflow_framework.so.2", "libtensorflow_framework.so.2")
    ctx.file("tf_version.txt", info["version"] + "\n")
    ctx.template(
        "BUILD",
        ctx.attr._build_template,
        {"%{DEFINES}": repr(defines), "%{VERSION}": info["version"]},
    )

tf_configure = repository_rule(
    implementation = _tf_configure_impl,
    environ = ["PYTHON_BIN_PATH"],
    local = True,
    attrs = {"_build_template": attr.label(default = Label("//third_party/tf:BUILD.tpl"))},
)
