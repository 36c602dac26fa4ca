"""Process-level switches (ppdet_htc/runtime.py): decided before Paddle's math library runs, never
overriding the user."""
import os
import subprocess
import sys

from ppdet_htc import runtime

AMD = {"vendor": "AuthenticAMD", "model": "AMD EPYC", "flags": ["avx", "avx2", "fma"], "cores": 2}
INTEL = {"vendor": "GenuineIntel", "model": "Xeon", "flags": ["avx", "avx2", "fma", "avx512f"], "cores": 2}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mkl_switch_only_on_amd_with_avx2_and_never_over_the_user():
    env = {}
    assert runtime.apply_process_defaults(env, AMD) and env[runtime.MKL_ENV] == "5"
    env = {}
    assert not runtime.apply_process_defaults(env, INTEL) and runtime.MKL_ENV not in env
    env = {}
    assert not runtime.apply_process_defaults(env, dict(AMD, flags=["avx"])) and not env  # no AVX2
    env = {runtime.MKL_ENV: "2"}
    assert not runtime.apply_process_defaults(env, AMD) and env[runtime.MKL_ENV] == "2"  # the user's value
    env = {runtime.EXACT_ENV: "1"}
    assert not runtime.apply_process_defaults(env, AMD) and runtime.MKL_ENV not in env  # exact path asked


def test_cpu_info_reads_vendor_model_and_simd_flags(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\n"
                 "flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw\n")
    info = runtime.cpu_info(str(f))
    assert info["vendor"] == "AuthenticAMD" and info["model"] == "AMD EPYC 9R14"
    assert info["flags"] == ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw"]


def _child(code, **env):
    full = dict(os.environ)
    for k in (runtime.MKL_ENV, runtime.EXACT_ENV, "OMP_NUM_THREADS"):
        full.pop(k, None)
    full.update(env)
    out = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, {!r}); ".format(REPO) + code],
                         env=full, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_import_decides_before_paddle_and_exact_undoes_it():
    code = ("import ppdet_htc, os; from ppdet_htc import runtime as r; a = os.environ.get('MKL_DEBUG_CPU_TYPE'); "
            "r.use_exact_process(); print(a, os.environ.get('MKL_DEBUG_CPU_TYPE'), os.environ['PPDET_HTC_EXACT'])")
    expected_first = "5" if runtime.cpu_info()["vendor"] == "AuthenticAMD" else "None"
    assert _child(code) == "{} None 1".format(expected_first)
    assert _child(code, MKL_DEBUG_CPU_TYPE="4") == "4 4 1"  # the user's value survives --exact too
    assert _child(code, PPDET_HTC_EXACT="1").split()[0] == "None"


def test_threads_follow_the_user_not_paddles_import_default():
    code = ("import ppdet_htc; import paddle; from ppdet_htc.engine.model_builder import set_cpu_threads; "
            "print(set_cpu_threads())")
    assert _child(code) == str(os.cpu_count())  # Paddle's import sets OMP_NUM_THREADS=1; not the user's choice
    assert _child(code, OMP_NUM_THREADS="1") == "1"
