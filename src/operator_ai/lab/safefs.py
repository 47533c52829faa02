"""What root does to the places the lab user can write, without following the lab user's links.

The lab user (and so the agent) may write in ``conf/``, ``data/`` and ``tmp/``. Anything root
does there could be turned against it: a link planted where root writes a file makes root
overwrite, or chown, whatever it points to. So:

- root writes a file there through a fresh temporary created with ``O_EXCL | O_NOFOLLOW``
  in a directory opened with ``O_NOFOLLOW``, and renames it over the name, which replaces a
  planted link instead of following it (:func:`write_file`);
- root changes owners with fd-relative calls that never follow a link, and skips whatever
  is not a plain file or directory (:func:`chown_tree`);
- a directory left by an earlier lab is removed and made anew, saying what in it was not
  plain (:func:`fresh_dir`);
- reading and writing a node's files while the lab runs happens as the lab user
  (``Lab.as_user``), so following a link gets the lab user only what it could read anyway.

The directory given to these functions must itself be one only root can replace (the lab
directory's own children): only its contents are the lab user's.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import stat
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def write_file(
    path: Path, text: str, owner: pwd.struct_passwd | None = None, mode: int = 0o644
) -> None:
    """Replace ``path`` with ``text``, owned by ``owner`` (as root), never through a link."""
    dir_fd = os.open(path.parent, _DIR_FLAGS)
    try:
        tmp = f".{path.name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
            dir_fd=dir_fd,
        )  # fmt: skip
        try:
            with os.fdopen(fd, "w", closefd=False) as handle:
                handle.write(text)
            if owner is not None and os.geteuid() == 0:
                os.fchown(fd, owner.pw_uid, owner.pw_gid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.replace(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def chown_tree(path: Path, owner: pwd.struct_passwd) -> None:
    """Give ``path`` and the plain files and directories under it to ``owner``; links,
    devices, sockets and fifos are left alone, and no link is followed."""
    for _, _, files, dir_fd in os.fwalk(path, follow_symlinks=False):
        os.fchown(dir_fd, owner.pw_uid, owner.pw_gid)
        for name in files:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISREG(info.st_mode):
                os.chown(name, owner.pw_uid, owner.pw_gid, dir_fd=dir_fd, follow_symlinks=False)


def oddities(path: Path, owner_uid: int) -> list[str]:
    """What under ``path`` is not a plain file or directory of ``owner_uid`` or root: links,
    hard links, special files, foreign owners. Each entry says what it is."""
    found: list[str] = []
    if not path.is_dir() or path.is_symlink():
        return [f"{path} is not a directory"] if os.path.lexists(path) else []
    for root, dirs, files, dir_fd in os.fwalk(path, follow_symlinks=False):
        for name in [*dirs, *files]:
            where = os.path.join(root, name)
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                found.append(f"{where} is a link to {os.readlink(name, dir_fd=dir_fd)}")
            elif not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                found.append(f"{where} is a special file")
            elif info.st_uid not in (owner_uid, 0):
                found.append(f"{where} belongs to uid {info.st_uid}")
            elif stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                found.append(f"{where} has {info.st_nlink} hard links")
    return found


def fresh_dir(path: Path, owner_uid: int) -> list[str]:
    """Remove ``path`` if it exists (links inside are removed, not followed) and make it
    anew, empty; return what in the old one was not plain (see :func:`oddities`)."""
    found = oddities(path, owner_uid)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
    path.mkdir()
    return found


def check_launcher(path: Path) -> str | None:
    """Why root should not run ``path`` (a node's launch script), or None: it must be a plain
    file that root owns and only root can change, in a directory only root can change."""
    for each, kind in ((path.parent, "directory"), (path, "file")):
        try:
            info = os.lstat(each)
        except OSError as exc:
            return f"{each}: {exc.strerror}"
        plain = stat.S_ISDIR(info.st_mode) if kind == "directory" else stat.S_ISREG(info.st_mode)
        if not plain:
            return f"{each} is not a plain {kind}"
        if os.geteuid() == 0 and info.st_uid != 0:
            return f"{each} belongs to uid {info.st_uid}, not root"
        if info.st_mode & 0o022:
            return f"{each} is writable by others (mode {stat.S_IMODE(info.st_mode):o})"
    return None
