"""The scripts of benchmarks/, imported by the tests that check them (they are not part of the package)."""
import importlib.util
from pathlib import Path


def benchmark_module(name: str):
    """benchmarks/<name>.py, imported as a module (the scripts are not part of the package)."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_minidiff_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
