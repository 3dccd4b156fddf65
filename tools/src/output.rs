//! The one way the tool writes files: every command's output goes through
//! [`write()`] (or [`Staged`] for files rendered by a library that needs a path).
//!
//! * `-` is standard output.
//! * A regular file (or a new path) is written atomically: a temporary file
//!   next to the target, synced, then renamed over it — readers never see a
//!   partial file, and a failure leaves the old file as it was. The new file
//!   keeps the old one's permissions.
//! * Symbolic links are followed: the file they point to is replaced, the
//!   link stays.
//! * Character devices, FIFOs and sockets (`/dev/null`, a named pipe,
//!   `/dev/stdout`) are written directly, never replaced by a regular file.
//! * A directory is refused.
//! * [`Streaming`] writes a file as it is produced, under the same rules
//!   (a regular file appears whole, when committed).
//! * [`refuse_inputs`] refuses, before any work, an output that is one of the
//!   command's inputs (the same file under any name).
//! * Writing to a closed standard output (`| head`) is [`ClosedStdout`], which
//!   `main` turns into a quiet exit with status 141 (128 + SIGPIPE), as a
//!   process killed by SIGPIPE would report. Informational messages go
//!   through [`say!`](crate::say), which ignores a closed standard output so
//!   the files a command writes are still written.

use anyhow::{bail, Context, Result};
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

/// Suffix of the tool's temporary files (`.NAME.PID.RANDOM.flowmote-tmp`).
const TMP_SUFFIX: &str = ".flowmote-tmp";

/// Standard output was closed by the reader (e.g. `| head`): `main` exits
/// quietly with status 141.
#[derive(Debug)]
pub struct ClosedStdout;

impl std::fmt::Display for ClosedStdout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for ClosedStdout {}

/// Print an informational line on standard output; a closed or failing
/// standard output is ignored (the command's files still get written).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `1 thing`, `2 things`: a count for a message.
pub fn count(n: impl Into<u64>, thing: &str) -> String {
    let n = n.into();
    format!("{n} {thing}{}", if n == 1 { "" } else { "s" })
}

/// Whether `path` names standard output (`-`).
pub fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Write `bytes` to standard output. A closed pipe is [`ClosedStdout`].
pub fn to_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Err(ClosedStdout.into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to standard output")),
    }
}

/// Where a path's bytes end up.
#[derive(Debug, PartialEq, Eq)]
enum Dest {
    /// Standard output (`-`).
    Stdout,
    /// An existing device, FIFO or socket: opened and written in place.
    Direct(PathBuf),
    /// A regular file, existing or new (symlinks resolved): replaced atomically.
    Atomic(PathBuf),
}

/// Follow `path` to where writing it must go.
fn resolve(path: &Path) -> Result<Dest> {
    if is_stdout(path) {
        return Ok(Dest::Stdout);
    }
    let shown = path.display();
    // `/dev/stdout`, `/proc/self/fd/N`: kernel "magic" links whose targets
    // are not paths; write them as the shell would.
    if path.starts_with("/dev") || path.starts_with("/proc") {
        if let Ok(m) = fs::metadata(path) {
            if !m.is_dir() {
                return Ok(Dest::Direct(path.to_path_buf()));
            }
        }
    }
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&p).with_context(|| format!("cannot read the link {shown}"))?;
                p = match p.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            Ok(m) if m.is_dir() => bail!("{shown} is a directory; give a file name"),
            Ok(m) if m.is_file() => return Ok(Dest::Atomic(p)),
            Ok(_) => return Ok(Dest::Direct(p)),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Dest::Atomic(p)),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot inspect {shown}"))),
        }
    }
    bail!("{shown}: too many levels of symbolic links")
}

/// Write `bytes` to `path` (`-` = standard output) as the module docs say.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    match resolve(path)? {
        Dest::Stdout => to_stdout(bytes),
        Dest::Direct(p) => {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .with_context(|| format!("cannot open {}", path.display()))?;
            f.write_all(bytes)
                .and_then(|()| f.flush())
                .with_context(|| format!("cannot write {}", path.display()))
        }
        Dest::Atomic(p) => {
            let shown = path.display().to_string();
            atomic(&p, &shown, |f, _| f.write_all(bytes).map_err(anyhow::Error::from))
        }
    }
}

/// The directory a file lives in (`.` for a bare name).
fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A temporary file next to `target` whose name ends like the target's
/// (plotters picks the image format from the extension).
fn temp_beside(target: &Path, shown: &str) -> Result<tempfile::NamedTempFile> {
    let dir = parent_dir(target);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
    sweep_stale(&dir);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = target
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let mut b = tempfile::Builder::new();
    let prefix = format!(".{name}.{}.", std::process::id());
    let suffix = format!("{TMP_SUFFIX}{ext}");
    b.prefix(&prefix).suffix(&suffix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // A new file gets the usual 0666 less the umask; a replaced one keeps its mode.
        let mode = fs::metadata(target).map(|m| m.permissions().mode()).unwrap_or(0o666);
        b.permissions(fs::Permissions::from_mode(mode & 0o7777));
    }
    b.tempfile_in(&dir)
        .with_context(|| format!("cannot create a temporary file next to {shown} in {}", dir.display()))
}

/// Write through a temporary file beside `target`, then rename it over the target.
fn atomic(target: &Path, shown: &str, fill: impl FnOnce(&mut fs::File, &Path) -> Result<()>) -> Result<()> {
    let mut tmp = temp_beside(target, shown)?;
    let tmp_path = tmp.path().to_path_buf();
    fill(tmp.as_file_mut(), &tmp_path).with_context(|| format!("cannot write {shown}"))?;
    tmp.as_file_mut()
        .sync_all()
        .with_context(|| format!("cannot write {shown}"))?;
    tmp.persist(target)
        .map_err(|e| anyhow::Error::new(e.error).context(format!("cannot write {shown}")))?;
    sync_dir(&parent_dir(target));
    Ok(())
}

/// Make a rename durable (best effort: not every platform can sync a directory).
fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Remove temporary files left in `dir` by a run of the tool that was killed
/// (SIGKILL, power cut) between creating and renaming them: their process id,
/// part of the name, no longer runs. Linux only (it reads `/proc`).
fn sweep_stale(dir: &Path) {
    if !cfg!(target_os = "linux") || !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') || !name.contains(TMP_SUFFIX) {
            continue;
        }
        // `.NAME.PID.RANDOM.flowmote-tmp[.ext]`: the pid is the field before the random part.
        let stem = &name[..name.find(TMP_SUFFIX).unwrap_or(name.len())];
        let mut fields = stem.rsplit('.');
        let (_random, pid) = (fields.next(), fields.next());
        if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Files rendered to temporary paths and put in place together by
/// [`Staged::commit`], so a failed run (a full disk, a bad plot) leaves every
/// old file as it was. Uncommitted temporaries are removed on drop.
#[derive(Default)]
pub struct Staged {
    files: Vec<(tempfile::TempPath, PathBuf, String)>,
}

impl Staged {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Render one file: `render` gets a temporary path with the target's
    /// extension, next to the target, and must write it completely.
    pub fn add(&mut self, target: &Path, render: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        let shown = target.display().to_string();
        let p = match resolve(target)? {
            Dest::Atomic(p) => p,
            Dest::Stdout | Dest::Direct(_) => bail!("{shown}: a rendered file needs a regular file path"),
        };
        let tmp = temp_beside(&p, &shown)?.into_temp_path();
        render(&tmp).with_context(|| format!("cannot write {shown}"))?;
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot write {shown}"))?;
        self.files.push((tmp, p, shown));
        Ok(())
    }

    /// Rename every staged file over its target.
    pub fn commit(self) -> Result<()> {
        for (tmp, target, shown) in self.files {
            tmp.persist(&target)
                .map_err(|e| anyhow::Error::new(e.error).context(format!("cannot write {shown}")))?;
            sync_dir(&parent_dir(&target));
        }
        Ok(())
    }
}

/// A file written as it is produced (`flowmote record` writes rows as the
/// device logs them), with the same rules as [`write()`]: `-` and devices,
/// FIFOs or sockets are written as the bytes come; a regular file is written
/// to a temporary file beside it and renamed over it by
/// [`Streaming::commit`], so until then (and after a failure, when the
/// value is dropped) the old file stays as it was and no half-written file
/// appears.
pub struct Streaming {
    sink: std::io::BufWriter<Box<dyn Write + Send>>,
    /// The temporary file and the target it is renamed to (regular files).
    staged: Option<(tempfile::TempPath, PathBuf)>,
    shown: String,
}

impl Streaming {
    /// Start writing `path` (`-` = standard output).
    pub fn create(path: &Path) -> Result<Streaming> {
        let shown = path.display().to_string();
        let (inner, staged): (Box<dyn Write + Send>, _) = match resolve(path)? {
            Dest::Stdout => (Box::new(std::io::stdout()), None),
            Dest::Direct(p) => (
                Box::new(
                    fs::OpenOptions::new()
                        .write(true)
                        .open(&p)
                        .with_context(|| format!("cannot open {shown}"))?,
                ),
                None,
            ),
            Dest::Atomic(p) => {
                let (file, tmp) = temp_beside(&p, &shown)?.into_parts();
                (Box::new(file), Some((tmp, p)))
            }
        };
        Ok(Streaming {
            sink: std::io::BufWriter::new(inner),
            staged,
            shown,
        })
    }

    fn fail(&self, e: std::io::Error) -> anyhow::Error {
        if self.staged.is_none() && self.shown == "-" && e.kind() == ErrorKind::BrokenPipe {
            ClosedStdout.into()
        } else {
            anyhow::Error::new(e).context(format!("cannot write {}", self.shown))
        }
    }

    /// Append `bytes`.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.sink.write_all(bytes).map_err(|e| self.fail(e))
    }

    /// Push what is buffered to the file or stream (a reader of standard
    /// output sees it).
    pub fn flush(&mut self) -> Result<()> {
        self.sink.flush().map_err(|e| self.fail(e))
    }

    /// Finish: flush, and put a regular file in place (synced, then renamed
    /// over the target).
    pub fn commit(mut self) -> Result<()> {
        self.flush()?;
        let shown = self.shown.clone();
        let Streaming { sink, staged, .. } = self;
        // Close the file before the rename.
        drop(
            sink.into_inner()
                .map_err(|e| anyhow::Error::new(e.into_error()).context(format!("cannot write {shown}")))?,
        );
        if let Some((tmp, target)) = staged {
            fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("cannot write {shown}"))?;
            tmp.persist(&target)
                .map_err(|e| anyhow::Error::new(e.error).context(format!("cannot write {shown}")))?;
            sync_dir(&parent_dir(&target));
        }
        Ok(())
    }
}

/// Whether two existing paths name the same file. Compares metadata (device
/// and inode on Unix) without opening either: opening a FIFO would block.
fn same_file(a: &Path, b: &Path) -> bool {
    let (Ok(ma), Ok(mb)) = (fs::metadata(a), fs::metadata(b)) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        ma.dev() == mb.dev() && ma.ino() == mb.ino()
    }
    #[cfg(not(unix))]
    {
        let _ = (ma, mb);
        matches!((fs::canonicalize(a), fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
    }
}

/// Refuse, before any work, an output path that is one of `inputs` (the same
/// file under any name, through links). `-` and paths that do not exist yet
/// never clash.
pub fn refuse_inputs(output: &Path, inputs: &[&Path]) -> Result<()> {
    if is_stdout(output) {
        return Ok(());
    }
    for input in inputs {
        if is_stdout(input) {
            continue;
        }
        if same_file(output, input) {
            bail!(
                "the output {} is the input {}: refusing to overwrite an input (choose another --out)",
                output.display(),
                input.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dash_is_stdout_and_directories_are_refused() {
        assert_eq!(resolve(Path::new("-")).unwrap(), Dest::Stdout);
        let dir = tempfile::tempdir().unwrap();
        let e = write(dir.path(), b"x").unwrap_err();
        assert!(format!("{e:#}").contains("is a directory"), "{e:#}");
    }

    #[test]
    fn new_and_existing_files_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.csv");
        write(&p, b"one").unwrap();
        write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_followed_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.json");
        let link = dir.path().join("link.json");
        fs::write(&target, b"old").unwrap();
        std::os::unix::fs::symlink("real.json", &link).unwrap();
        write(&link, b"new").unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&target).unwrap(), b"new");
        // A dangling link creates its target.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink("made.txt", &dangling).unwrap();
        write(&dangling, b"made").unwrap();
        assert_eq!(fs::read(dir.path().join("made.txt")).unwrap(), b"made");
        assert!(fs::symlink_metadata(&dangling).unwrap().file_type().is_symlink());
    }

    #[cfg(unix)]
    #[test]
    fn permissions_are_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.json");
        fs::write(&p, b"x").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        write(&p, b"y").unwrap();
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o640);
    }

    #[cfg(unix)]
    #[test]
    fn devices_are_written_in_place() {
        let null = Path::new("/dev/null");
        if !null.exists() {
            return;
        }
        write(null, b"discarded").unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(fs::metadata(null).unwrap().file_type().is_char_device());
    }

    #[test]
    fn an_input_is_never_an_output() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        fs::write(&p, b"a\n1\n").unwrap();
        let other = dir.path().join("./t.csv");
        let e = refuse_inputs(&other, &[Path::new("m.json"), &p]).unwrap_err();
        assert!(e.to_string().contains("refusing to overwrite an input"), "{e}");
        refuse_inputs(&dir.path().join("new.csv"), &[&p]).unwrap();
        refuse_inputs(Path::new("-"), &[&p]).unwrap();
    }

    #[test]
    fn staged_files_appear_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.png");
        fs::write(&a, b"old").unwrap();
        let mut s = Staged::new();
        s.add(&a, |t| {
            assert_eq!(t.extension().unwrap(), "png");
            fs::write(t, b"new").map_err(Into::into)
        })
        .unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"old");
        s.commit().unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"new");
        // A failed render leaves the old file and no temporary behind.
        let mut s = Staged::new();
        assert!(s.add(&a, |_| bail!("disk full")).is_err());
        drop(s);
        assert_eq!(fs::read(&a).unwrap(), b"new");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn stale_temporaries_of_dead_processes_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        // pid 0 never names a running user process in /proc.
        let stale = dir.path().join(format!(".m.json.999999999.abc{TMP_SUFFIX}"));
        fs::write(&stale, b"half").unwrap();
        write(&dir.path().join("m.json"), b"whole").unwrap();
        assert!(!stale.exists());
    }

    #[test]
    fn streamed_files_appear_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rec.csv");
        fs::write(&p, b"old").unwrap();
        let mut s = Streaming::create(&p).unwrap();
        s.write_all(b"a\n").unwrap();
        s.flush().unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"old");
        s.write_all(b"1\n").unwrap();
        s.commit().unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"a\n1\n");
        // Dropped without a commit: the old file stays, no temporary is left.
        let mut s = Streaming::create(&p).unwrap();
        s.write_all(b"half").unwrap();
        drop(s);
        assert_eq!(fs::read(&p).unwrap(), b"a\n1\n");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
