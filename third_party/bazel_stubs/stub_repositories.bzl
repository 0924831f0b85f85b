"""Offline stand-ins for @rules_cc, @rules_java and @remote_coverage_tools.

Bazel 4.x's @bazel_tools refers to @rules_cc and @rules_java and would download them; these
local repositories forward to the native rules instead, so the build works without a network.
Newer Bazel versions bring their own, so the stand-ins are declared only for 4.x (or when the
version is unknown, as with Debian's bazel-bootstrap).
"""

def stub_repositories():
    version = native.bazel_version
    if version and not version.startswith("4."):
        return
    native.local_repository(name = "rules_cc", path = "third_party/bazel_stubs/rules_cc")
    native.local_repository(name = "rules_java", path = "third_party/bazel_stubs/rules_java")
    native.local_repository(
        name = "remote_coverage_tools",
        path = "third_party/bazel_stubs/remote_coverage_tools",
    )
