"""Run the code blocks of a Markdown page as a user would paste them.

The convention every page follows: each ```bash and ```python block runs, in page order, in one
fresh temporary directory per page, where `train.py` and `bench/` are reachable as at the
repository root (symlinks) and the project is importable. The page's python blocks share one
interpreter (a name defined in one block is there in the next), so a page reads like a session.
A block whose previous non-blank line is `<!-- skip: reason -->` is not run; ```text blocks
are output examples. Untagged fences and shell or Python aliases (```sh, ```py, ...) are refused,
so no block can look runnable and silently not run.
"""
from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = {"bash", "python"}
# Tags that read as runnable but would not run: refused, so the page must say bash/python/text.
ALIASES = {"", "sh", "shell", "console", "zsh", "py", "python3", "pycon", "ipython", "bash-session"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[^\s`{]*)")
SKIP = re.compile(r"^\s*<!--\s*skip:\s*(?P<reason>\S.*?)\s*-->\s*$")
BLOCK_TIMEOUT_S = 600


@dataclass
class Block:
    page: str
    line: int          # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None   # the reason, where the block is marked <!-- skip: reason -->

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def extract_blocks(text: str, page: str) -> list[Block]:
    """Every fenced block of a Markdown text, with its language, line and skip marker."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = len(m["indent"]), m["fence"], m["lang"].lower()
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        # A fence indented in a list: its lines lose that indent, no more.
        body = "\n".join(line[indent:] if not line[:indent].strip() else line.lstrip() for line in lines[i + 1:j])
        prev = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        skip = SKIP.match(prev)
        blocks.append(Block(page, i + 1, lang, body + "\n", skip["reason"] if skip else None))
        i = j + 1
    return blocks


def refused_tags(blocks: list[Block]) -> list[str]:
    return [f"{b.where}: a ```{b.lang or '(no language)'} block; tag it bash or python (run) or text (output)"
            for b in blocks if b.lang in ALIASES]


def block_env() -> dict:
    """The project importable, this interpreter's scripts first on PATH, no network, no display."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(HF_HUB_OFFLINE="1", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    return env


def make_workdir(parent: Path) -> Path:
    work = Path(tempfile.mkdtemp(prefix="page-", dir=parent))
    for name in ("train.py", "bench"):
        (work / name).symlink_to(ROOT / name)
    return work


# The page's Python session: reads "<length>\n<code>" on stdin, runs it in one namespace, and
# reports "ok" or "error" on the status pipe; output goes to the log file the runner reads.
WORKER = r"""
import os, sys, traceback
status = os.fdopen(int(sys.argv[1]), "w")
ns = {"__name__": "__main__"}
while True:
    header = sys.stdin.readline()
    if not header:
        break
    where, size = header.rsplit(" ", 1)
    code = sys.stdin.read(int(size))
    try:
        exec(compile(code, where, "exec"), ns)
        ok = True
    except SystemExit as e:
        ok = e.code in (None, 0)
        if not ok:
            traceback.print_exc()
    except BaseException:
        traceback.print_exc()
        ok = False
    sys.stdout.flush(); sys.stderr.flush()
    status.write("ok\n" if ok else "error\n"); status.flush()
"""


class PythonSession:
    def __init__(self, cwd: Path, env: dict, log: Path):
        self.log = log
        read_fd, write_fd = os.pipe()
        self.out = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, str(write_fd)], cwd=cwd, env=env, stdin=subprocess.PIPE,
                                     stdout=self.out, stderr=subprocess.STDOUT, pass_fds=(write_fd,), text=True)
        os.close(write_fd)
        self.status = os.fdopen(read_fd)

    def run(self, block: Block, timeout: float) -> str | None:
        """None when the block ran; else why not."""
        self.proc.stdin.write(f"{block.where} {len(block.code)}\n{block.code}")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.status], [], [], timeout)
        if not ready:
            self.close()
            return f"timed out after {timeout:.0f} s"
        line = self.status.readline().strip()
        return None if line == "ok" else ("the Python session died" if not line else "raised")

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.status.close()
        self.out.close()


def tail(path: Path, start: int, chars: int = 4000) -> str:
    text = path.read_bytes()[start:].decode(errors="replace")
    return text[-chars:]


def run_page(page: Path, blocks: list[Block], parent: Path, timeout: float = BLOCK_TIMEOUT_S) -> tuple[list[str], list[str]]:
    """Run a page's blocks in order in a fresh directory. Returns (failures, timings): each failure
    names the page and line and ends with the block's output; the page stops at its first failure,
    since later blocks build on earlier ones."""
    work, env = make_workdir(parent), block_env()
    log = work.parent / f"{work.name}.log"
    log.touch()
    session, timings = None, []
    try:
        for block in blocks:
            if block.lang not in RUN or block.skip:
                continue
            start, began = log.stat().st_size, time.monotonic()
            if block.lang == "python":
                session = session or PythonSession(work, env, log)
                why = session.run(block, timeout)
            else:
                with open(log, "ab") as out:
                    try:
                        rc = subprocess.run(["bash", "-c", "set -eo pipefail\n" + block.code], cwd=work, env=env,
                                            stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode
                        why = None if rc == 0 else f"exited {rc}"
                    except subprocess.TimeoutExpired:
                        why = f"timed out after {timeout:.0f} s"
            timings.append(f"{block.where} ({block.lang}) {time.monotonic() - began:.1f} s")
            if why:
                return [f"{block.where}: the ```{block.lang} block {why}:\n{block.code}\n--- output ---\n"
                        f"{tail(log, start)}"], timings
        return [], timings
    finally:
        if session:
            session.close()


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# Pages whose blocks run in tests/test_docs_pages.py, so pytest-xdist's --dist loadfile spreads the
# pages over two workers (about half the blocks' time in each file); the rest run in test_docs.py.
SECOND_FILE = {"docs/large-models.md", "docs/deployment.md", "docs/cpu-performance.md", "docs/parity.md",
               "docs/benchmarks.md", "docs/formats.md"}


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def check_page(page: Path, parent: Path):
    """Every block of the page runs, in order; none has a tag that would look runnable and not run."""
    blocks = extract_blocks(page.read_text(), page_id(page))
    assert not (refused := refused_tags(blocks)), "\n".join(refused)
    failures, timings = run_page(page, blocks, parent)
    print("\n".join(timings))
    assert not failures, "\n".join(failures)
