"""`auto` under faults: nonsense output options and budgets refused in one line before anything is written,
and writes that fail for want of space or permission ending in one line that names the path, with no
temporary file left behind and the study database intact. Nothing here trains a model."""

import errno
import hashlib
import io
import sqlite3
from pathlib import Path

import optuna
import pytest

from search.cli.main import main
from search.errors import UserError, write_fault
from search.io import write_bytes, write_text
from search.study.artifacts import check_artifact_store, open_artifact_store
from search.study.storage import open_storage
from tests.test_ensemble_manifest import manifest_record, write_folder


def one_line_error(err: str) -> str:
    err = err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` with a hash of its bytes: what a refused command must leave as it was."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def place(tmp_path, monkeypatch):
    """A working directory holding a study database (with one study) and its artifact store."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s" / "artifacts").mkdir(parents=True)
    url = f"sqlite:///{tmp_path}/s/studies.db"
    storage = open_storage(url)
    optuna.create_study(study_name="auto-cnn", storage=storage)
    storage.engine.dispose()  # the last connection closed: SQLite folds its -wal file back in
    (tmp_path / "ens").mkdir()
    write_folder(tmp_path / "old-ensemble", manifest_record())  # another run's saved ensemble
    (tmp_path / "web-app").mkdir()
    (tmp_path / "web-app" / "manifest.json").write_text("{}")  # another program's: no saved ensemble
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("label\n")
    return tmp_path, url


@pytest.mark.parametrize(
    ("args", "option", "expected"),
    [
        (["--out", "s/studies.db"], "--out", "is the study database"),
        (["--out", "s/studies.db-wal"], "--out", "the study database's wal file"),
        (["--out", "s/artifacts/submission.csv"], "--out", "is inside the artifact store"),
        (["--out", "old-ensemble/submission.csv"], "--out", "is inside the saved ensemble"),
        (["--out", "data/train.csv", "--data", "data"], "--out", "is an input data file"),
        (["--out", "web-app/submission.csv", "--report", "web-app/submission.csv"], "--out and --report", "both name"),
        (["--report", "s/artifacts"], "--report", "is the artifact store"),
        (["--report", "old-ensemble"], "--report", "is inside the saved ensemble"),
        (["--save", "s/studies.db"], "--save", "is the study database"),
        (["--save", "s/artifacts/ensemble"], "--save", "is inside the artifact store"),
        (["--save", "s"], "--save", "holds the study database"),
        (["--out", "same", "--report", "same"], "--out and --report", "both name"),
        (["--save", "ens", "--out", "ens/submission.csv"], "--out", "inside the --save folder"),
        (["--save", "ens", "--report", "ens"], "--report", "inside the --save folder"),
        (["--budget", "0"], "--budget", "under 60s"),
        (["--budget=-5m"], "--budget", "is not a duration"),
        (["--budget", "soon"], "--budget", "is not a duration"),
        (["--budget", "nan"], "--budget", "is not a duration"),
        (["--budget", "inf"], "--budget", "is not a duration"),
        (["--budget", "200h"], "--budget", "over a week"),
        (["--budget", "9" * 400], "--budget", "over a week"),
    ],
)
def test_auto_refuses_nonsense_options_in_one_line_before_writing_anything(place, capsys, args, option, expected):
    folder, url = place
    before = snapshot(folder)
    assert main(["auto", "--storage", url, "--spaces", "cnn", *args]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert line.startswith("digit-search auto: error: ") and option in line and expected in line, line
    assert snapshot(folder) == before
    assert not (folder / "studies").exists() and not (folder / "reports").exists()


def test_auto_refuses_the_default_database_of_other_runs_as_out(place, capsys):
    folder, url = place
    (folder / "studies").mkdir()
    (folder / "studies" / "digit-search.db").write_bytes(b"another run's studies")
    before = snapshot(folder)
    assert main(["auto", "--storage", url, "--out", "studies/digit-search.db"]) == 2
    assert "is the study database" in one_line_error(capsys.readouterr().err)
    assert snapshot(folder) == before


def test_ensemble_refuses_the_database_as_out_with_the_same_check(place, capsys):
    folder, url = place
    before = snapshot(folder)
    assert main(["ensemble", "--studies", "auto-cnn", "--storage", url, "--out", "s/studies.db"]) == 2
    assert "--out 's/studies.db' is the study database" in one_line_error(capsys.readouterr().err)
    assert snapshot(folder) == before


# ---- disk faults ---------------------------------------------------------------------------------


class FullDisk(io.RawIOBase):
    """A file that takes `room` bytes and then fails as a full disk does."""

    def __init__(self, stream, room: int, code: int = errno.ENOSPC):
        self.stream, self.room, self.code = stream, room, code

    def writable(self):
        return True

    def write(self, data):
        if len(data) > self.room:
            self.stream.write(bytes(data[: self.room]))
            self.room = 0
            raise OSError(self.code, "No space left on device")
        self.room -= len(data)
        return self.stream.write(data)

    def close(self):
        self.stream.close()
        super().close()


@pytest.fixture
def full_disk(monkeypatch):
    """Files search.io opens for writing take 2 bytes and then raise ENOSPC (a write() names no file)."""
    import search.io

    def fake_open(path, mode="r", *args, **kwargs):
        stream = open(path, mode, *args, **kwargs)
        return FullDisk(stream, 2) if "w" in mode else stream

    monkeypatch.setattr(search.io, "open", fake_open, raising=False)


def test_an_atomic_write_on_a_full_disk_names_the_target_and_leaves_the_old_file_and_no_temporary(tmp_path, full_disk):
    target = tmp_path / "submission.csv"
    target.write_text("old\n")
    with pytest.raises(OSError) as caught:
        write_text(target, "ImageId,Label\n" + "1,7\n" * 1000)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["submission.csv"]
    message = write_fault(caught.value, {"out": str(target)})
    assert message == f"cannot write {target}: no space left on device; free some space or give --out elsewhere"


def test_a_read_only_folder_names_the_target_not_the_temporary(tmp_path, monkeypatch):
    import search.io

    def read_only(*args, dir=None, prefix="", suffix="", **kwargs):  # chmod does not stop root: inject EROFS
        raise OSError(errno.EROFS, "Read-only file system", str(Path(dir) / f"{prefix}abc{suffix}"))

    monkeypatch.setattr(search.io.tempfile, "mkstemp", read_only)
    with pytest.raises(OSError) as caught:
        write_bytes(tmp_path / "report.html", b"<html>")
    assert caught.value.errno == errno.EROFS and caught.value.filename == str(tmp_path / "report.html")
    assert list(tmp_path.iterdir()) == []
    assert "cannot write" in write_fault(caught.value, {}) and "read-only file system; make it writable" in write_fault(
        caught.value, {}
    )


def test_an_artifact_on_a_full_disk_leaves_no_half_written_file_and_the_probe_says_so_in_one_line(tmp_path, full_disk):
    store = open_artifact_store(tmp_path / "artifacts")
    with pytest.raises(OSError, match="No space left"):
        store.write("weights-1", io.BytesIO(b"x" * 1000))
    assert list((tmp_path / "artifacts").iterdir()) == []
    with pytest.raises(UserError) as refused:
        check_artifact_store(str(tmp_path / "artifacts"))
    assert refused.value.cli_message.startswith(f"--artifacts {tmp_path / 'artifacts'}: cannot write there")
    assert "No space left on device" in refused.value.cli_message
    assert list((tmp_path / "artifacts").iterdir()) == []


def sqlite_fault(monkeypatch, fault: str) -> None:
    """Every SQLite connection opened from now on fails writes as a full disk or a read-only file does."""
    real = sqlite3.connect

    class FullConnection(sqlite3.Connection):
        def commit(self):
            if self.in_transaction:
                raise sqlite3.OperationalError("database or disk is full")
            return super().commit()

    def connect(*args, **kwargs):
        if fault == "full":
            return real(*args, factory=FullConnection, **kwargs)
        connection = real(*args, **kwargs)
        connection.execute("PRAGMA query_only = ON")  # SQLite's own "attempt to write a readonly database"
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect)
    monkeypatch.setattr(sqlite3.dbapi2, "connect", connect)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("full", "no space left on device; free some space or give --storage elsewhere"),
        ("read-only", "the database is read-only; make it and its folder writable or give --storage elsewhere"),
    ],
)
def test_a_database_that_cannot_be_written_ends_in_one_line_and_stays_intact(
    place, capsys, monkeypatch, fault, expected
):
    folder, url = place
    database = folder / "s" / "studies.db"
    before = optuna.get_all_study_names(url)
    sqlite_fault(monkeypatch, fault)
    code = main(
        [
            "run",
            "--space",
            "cnn",
            "--study",
            "new",
            "--trials",
            "1",
            "--epochs",
            "1",
            "--limit",
            "300",
            "--storage",
            url,
        ]
    )
    assert code == 2
    line = one_line_error(capsys.readouterr().err)
    assert line == f"digit-search run: error: cannot write {database}: {expected}"
    monkeypatch.undo()
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert optuna.get_all_study_names(url) == before
    assert not [p for p in (folder / "s").rglob("*") if p.name.endswith(".tmp")]


def test_optunas_wrapping_and_a_later_assertion_still_read_as_a_full_disk(tmp_path):
    url = f"sqlite:///{tmp_path}/studies.db"
    try:
        try:
            try:
                raise sqlite3.OperationalError("database or disk is full")
            except sqlite3.OperationalError as err:
                raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from err
        except optuna.exceptions.StorageInternalError:
            raise AssertionError("Should not reach.")  # what `auto` ended with before
    except AssertionError as err:
        message = write_fault(err, {"storage": url}, database=tmp_path / "studies.db")
    assert (
        message
        == f"cannot write {tmp_path}/studies.db: no space left on device; free some space or give --storage elsewhere"
    )
    assert write_fault(AssertionError("Should not reach."), {"storage": url}, database=tmp_path / "studies.db") is None


def test_an_artifact_disk_that_fills_during_a_run_stops_it_at_the_first_trial_in_one_line(
    tmp_path, monkeypatch, capsys
):
    # the probe before the run still fits; each trial's weights then find the disk full
    from search.study.artifacts import AtomicFileSystemArtifactStore

    write = AtomicFileSystemArtifactStore.write

    def filling(self, artifact_id, content_body):
        if not artifact_id.startswith(".digit-search-probe"):
            raise OSError(errno.ENOSPC, "No space left on device", str(self.folder / artifact_id))
        return write(self, artifact_id, content_body)

    monkeypatch.setattr(AtomicFileSystemArtifactStore, "write", filling)
    space = str(Path(__file__).parent / "fixtures" / "my_space.py")
    url = f"sqlite:///{tmp_path}/studies.db"
    artifacts = tmp_path / "artifacts"
    code = main(["run", "--space", space, "--trials", "4", "--epochs", "1", "--limit", "200", "--storage", url,
                 "--artifacts", str(artifacts)])  # fmt: skip
    assert code == 1
    out = capsys.readouterr().out
    stopped = [line for line in out.splitlines() if line.startswith("stopped early:")]
    assert len(stopped) == 1 and f"cannot write {artifacts}/" in stopped[0], out
    assert stopped[0].endswith("no space left on device; free some space"), stopped[0]
    (trial,) = optuna.load_study(study_name=optuna.get_all_study_names(url)[0], storage=url).trials
    assert trial.state == optuna.trial.TrialState.FAIL  # one training lost, not five
    assert list(artifacts.iterdir()) == []  # no half-written artifact
    with sqlite3.connect(tmp_path / "studies.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
