"""Build the one C extension (the interval-energy kernel); everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "agent.energy._kernel",
            ["agent/energy/_kernel.c"],
            # No -ffast-math: the kernel must round exactly as the Polars reference does.
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror=implicit"],
        )
    ]
)
