"""What makes a CPU step cheaper or visible: freed large blocks kept for reuse (no page faults on the
next step's buffers), and train.step_breakdown's per-phase times in the summary."""
from __future__ import annotations

import ctypes
import platform
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_recipe

import bert_tasks
from bert_tasks.config import load_config
from bert_tasks.host_memory import keep_freed_blocks
from bert_tasks.step_timing import PHASES, format_breakdown

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def page_faults_of_a_fresh_block(megabytes: int) -> int:
    """Minor page faults while a newly allocated block is written: what the allocator does with it
    after free is what keep_freed_blocks changes."""
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.restype, libc.memset.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(megabytes << 20)
    libc.memset(block, 1, megabytes << 20)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    libc.free(block)
    return after - before


FAULTS_IN_A_FRESH_PROCESS = """
import sys
sys.path.insert(0, {tests!r})
from bert_tasks.host_memory import keep_freed_blocks
from test_step_costs import page_faults_of_a_fresh_block
assert keep_freed_blocks() is True
page_faults_of_a_fresh_block(24)
print(page_faults_of_a_fresh_block(24), page_faults_of_a_fresh_block(64))
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_a_freed_large_buffer_is_reused_without_page_faults_and_a_huge_one_is_returned():
    """In a fresh process: a long test session leaves free heap at the top that would serve any block."""
    script = FAULTS_IN_A_FRESH_PROCESS.format(tests=str(Path(__file__).resolve().parent))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    reused, huge = (int(n) for n in done.stdout.split())
    # 24 MB is 6,144 pages of 4 KB: a fresh mmap (glibc's default for it) would fault every one again
    assert reused < 500
    # above 32 MB a block the heap cannot hold is mmapped and unmapped on free, so batches of varying
    # length cannot grow the heap with them: it faults in afresh (16,384 pages for 64 MB)
    assert huge > 10_000


def test_step_breakdown_times_every_phase_when_asked(tmp_path, tiny_checkpoint, capsys):
    config = load_config(tiny_recipe(tiny_checkpoint, tmp_path, train={"step_breakdown": True}))
    summary = bert_tasks.train(config)
    times = summary.step_breakdown_ms
    assert set(times) == set(PHASES)
    assert times["forward"] > 0 and times["backward"] > 0 and times["optimizer"] > 0
    assert all(value >= 0 for value in times.values())
    assert bert_tasks.RunSummary.load(tmp_path / "run").step_breakdown_ms == times
    assert format_breakdown(times) in capsys.readouterr().err
    summary_when_off = bert_tasks.train(load_config(tiny_recipe(tiny_checkpoint, tmp_path / "off")))
    assert summary_when_off.step_breakdown_ms == {}


def test_format_breakdown_lists_the_largest_phase_first():
    assert format_breakdown({"data": 1.0, "forward": 6.0, "backward": 3.0}) == "step 10.0 ms: forward 6.0 (60%), backward 3.0 (30%), data 1.0 (10%)"
