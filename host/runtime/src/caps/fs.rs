//! The `fs` capability: standard `wasi:filesystem` through preopened
//! directories, with every path-bearing call passing the guard.
//!
//! The directories come only from the [`FsGrant`](warden_policy::FsGrant): a
//! call without an fs grant has no preopens and does not even link the
//! interface. Within a granted directory two independent layers hold:
//! the guard refuses, before any syscall, paths with `..`, paths outside a
//! granted directory and writes under a read-only one; and wasmtime-wasi's
//! cap-std descriptors refuse anything that resolves outside the directory
//! (symlinks, races). A refusal by the second layer is recorded as a
//! `sandbox.fs.escape` denial on the same event.
//!
//! [`FsView`] wraps wasmtime-wasi's own implementation: each method either
//! checks the guard and delegates, or (for calls on an already-open descriptor,
//! whose access was decided when it was opened) delegates directly.

use std::collections::HashMap;

use warden_policy::{Decision, ImportCall};
use wasmtime::component::{HasData, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemCtxView};
use wasmtime_wasi::p2::bindings::filesystem::types::{HostDescriptor, HostDirectoryEntryStream};
use wasmtime_wasi::p2::bindings::filesystem::{preopens, types};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, FsError, FsResult, ReaddirIterator};

use crate::guard::Guard;

/// Guest paths of open descriptors, keyed by resource rep, so the guard sees
/// full paths (`/workspace/notes/a.txt`) rather than descriptor-relative ones.
#[derive(Debug, Default)]
pub struct FsPaths(HashMap<u32, String>);

/// `HasData` marker for the guarded filesystem.
#[derive(Debug)]
pub struct FsCap;

impl HasData for FsCap {
    type Data<'a> = FsView<'a>;
}

/// The filesystem as one call sees it: wasmtime-wasi's view plus the guard.
pub struct FsView<'a> {
    pub inner: WasiFilesystemCtxView<'a>,
    pub guard: &'a Guard,
    pub paths: &'a mut FsPaths,
}

impl std::fmt::Debug for FsView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsView")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl FsView<'_> {
    fn base(&self, fd: &Resource<Descriptor>) -> String {
        self.paths
            .0
            .get(&fd.rep())
            .cloned()
            .unwrap_or_else(|| "?".to_owned())
    }

    /// Joins a descriptor's guest path and a relative path. An absolute path is
    /// kept as given so the guard can refuse it by name.
    fn full(&self, fd: &Resource<Descriptor>, path: &str) -> String {
        if path.starts_with('/') {
            return path.to_owned();
        }
        let base = self.base(fd);
        let rel = path.trim_start_matches("./");
        if rel.is_empty() || rel == "." {
            base
        } else {
            format!("{}/{rel}", base.trim_end_matches('/'))
        }
    }

    /// Asks the guard; on denial returns the error the guest sees. A write
    /// waits for its write-ahead audit record before it may happen.
    fn check(
        &self,
        call: ImportCall,
    ) -> impl Future<Output = Result<u32, FsError>> + Send + 'static {
        // Decided now; only the write-ahead wait is deferred (and it borrows
        // nothing of the view).
        let effect = call.leaves_sandbox();
        let decided = self.guard.check(call);
        let guard = self.guard.clone();
        async move {
            match decided {
                (seq, Decision::Allow) => {
                    if effect && guard.before_effect(seq).await.is_err() {
                        return Err(types::ErrorCode::NotPermitted.into());
                    }
                    Ok(seq)
                }
                (_, Decision::Deny { .. }) => Err(types::ErrorCode::NotPermitted.into()),
            }
        }
    }

    /// Records the effect's failure, as a sandbox denial when the
    /// capability-based filesystem refused to leave the directory. cap-std
    /// reports an escape as EPERM (`not-permitted`); EACCES (`access`) is an
    /// ordinary host permission and is recorded as an error, not an escape.
    fn record<T>(&self, seq: u32, path: &str, result: &FsResult<T>) {
        if let Err(e) = result {
            match e.downcast_ref() {
                Some(types::ErrorCode::NotPermitted) => {
                    self.guard.record_sandbox_denial(
                        seq,
                        "sandbox.fs.escape",
                        format!("fs: `{path}` resolves outside the granted directory"),
                    );
                }
                Some(code) => self.guard.record_error(seq, format!("{code:?}")),
                None => self.guard.record_error(seq, "trap".to_owned()),
            }
        }
    }
}

impl preopens::Host for FsView<'_> {
    fn get_directories(&mut self) -> wasmtime::Result<Vec<(Resource<Descriptor>, String)>> {
        let dirs = preopens::Host::get_directories(&mut self.inner)?;
        for (fd, path) in &dirs {
            self.paths.0.insert(fd.rep(), path.clone());
        }
        Ok(dirs)
    }
}

impl types::Host for FsView<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<types::ErrorCode> {
        types::Host::convert_error_code(&mut self.inner, err)
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<types::ErrorCode>> {
        types::Host::filesystem_error_code(&mut self.inner, err)
    }
}

impl HostDescriptor for FsView<'_> {
    async fn advise(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
        len: types::Filesize,
        advice: types::Advice,
    ) -> FsResult<()> {
        self.inner.advise(fd, offset, len, advice).await
    }

    async fn sync_data(&mut self, fd: Resource<types::Descriptor>) -> FsResult<()> {
        self.inner.sync_data(fd).await
    }

    async fn get_flags(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<types::DescriptorFlags> {
        self.inner.get_flags(fd).await
    }

    async fn get_type(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<types::DescriptorType> {
        self.inner.get_type(fd).await
    }

    async fn set_size(
        &mut self,
        fd: Resource<types::Descriptor>,
        size: types::Filesize,
    ) -> FsResult<()> {
        self.inner.set_size(fd, size).await
    }

    async fn set_times(
        &mut self,
        fd: Resource<types::Descriptor>,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        self.inner.set_times(fd, atim, mtim).await
    }

    async fn read(
        &mut self,
        fd: Resource<types::Descriptor>,
        len: types::Filesize,
        offset: types::Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        self.inner.read(fd, len, offset).await
    }

    async fn write(
        &mut self,
        fd: Resource<types::Descriptor>,
        buf: Vec<u8>,
        offset: types::Filesize,
    ) -> FsResult<types::Filesize> {
        self.inner.write(fd, buf, offset).await
    }

    async fn read_directory(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<Resource<types::DirectoryEntryStream>> {
        let path = self.base(&fd);
        let seq = self
            .check(ImportCall::FsRead { path: path.clone() })
            .await?;
        let r = self.inner.read_directory(fd).await;
        self.record(seq, &path, &r);
        r
    }

    async fn sync(&mut self, fd: Resource<types::Descriptor>) -> FsResult<()> {
        self.inner.sync(fd).await
    }

    async fn create_directory_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let full = self.full(&fd, &path);
        let seq = self
            .check(ImportCall::FsWrite { path: full.clone() })
            .await?;
        let r = self.inner.create_directory_at(fd, path).await;
        self.record(seq, &full, &r);
        r
    }

    async fn stat(&mut self, fd: Resource<types::Descriptor>) -> FsResult<types::DescriptorStat> {
        self.inner.stat(fd).await
    }

    async fn stat_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::DescriptorStat> {
        let full = self.full(&fd, &path);
        let seq = self
            .check(ImportCall::FsRead { path: full.clone() })
            .await?;
        let r = self.inner.stat_at(fd, path_flags, path).await;
        self.record(seq, &full, &r);
        r
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        let full = self.full(&fd, &path);
        let seq = self
            .check(ImportCall::FsWrite { path: full.clone() })
            .await?;
        let r = self
            .inner
            .set_times_at(fd, path_flags, path, atim, mtim)
            .await;
        self.record(seq, &full, &r);
        r
    }

    async fn link_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        old_path_flags: types::PathFlags,
        old_path: String,
        new_descriptor: Resource<types::Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let old_full = self.full(&fd, &old_path);
        let new_full = self.full(&new_descriptor, &new_path);
        self.check(ImportCall::FsRead { path: old_full }).await?;
        let seq = self
            .check(ImportCall::FsWrite {
                path: new_full.clone(),
            })
            .await?;
        let r = self
            .inner
            .link_at(fd, old_path_flags, old_path, new_descriptor, new_path)
            .await;
        self.record(seq, &new_full, &r);
        r
    }

    async fn open_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        oflags: types::OpenFlags,
        flags: types::DescriptorFlags,
    ) -> FsResult<Resource<types::Descriptor>> {
        let full = self.full(&fd, &path);
        let write = flags
            .intersects(types::DescriptorFlags::WRITE | types::DescriptorFlags::MUTATE_DIRECTORY)
            || oflags.intersects(types::OpenFlags::CREATE | types::OpenFlags::TRUNCATE);
        let seq = self
            .check(ImportCall::FsOpen {
                path: full.clone(),
                write,
            })
            .await?;
        let r = self
            .inner
            .open_at(fd, path_flags, path, oflags, flags)
            .await;
        self.record(seq, &full, &r);
        if let Ok(new_fd) = &r {
            self.paths.0.insert(new_fd.rep(), full);
        }
        r
    }

    fn drop(&mut self, fd: Resource<types::Descriptor>) -> wasmtime::Result<()> {
        self.paths.0.remove(&fd.rep());
        HostDescriptor::drop(&mut self.inner, fd)
    }

    async fn readlink_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<String> {
        let full = self.full(&fd, &path);
        let seq = self
            .check(ImportCall::FsRead { path: full.clone() })
            .await?;
        let r = self.inner.readlink_at(fd, path).await;
        self.record(seq, &full, &r);
        r
    }

    async fn remove_directory_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let full = self.full(&fd, &path);
        let seq = self
            .check(ImportCall::FsDelete { path: full.clone() })
            .await?;
        let r = self.inner.remove_directory_at(fd, path).await;
        self.record(seq, &full, &r);
        r
    }

    async fn rename_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        old_path: String,
        new_fd: Resource<types::Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let old_full = self.full(&fd, &old_path);
        let new_full = self.full(&new_fd, &new_path);
        self.check(ImportCall::FsDelete { path: old_full }).await?;
        let seq = self
            .check(ImportCall::FsWrite {
                path: new_full.clone(),
            })
            .await?;
        let r = self.inner.rename_at(fd, old_path, new_fd, new_path).await;
        self.record(seq, &new_full, &r);
        r
    }

    async fn symlink_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        src_path: String,
        dest_path: String,
    ) -> FsResult<()> {
        // A symlink's target is resolved later, relative to the link; the
        // capability filesystem refuses to follow it out of the directory, and
        // the guard refuses targets that are absolute or climb with `..`.
        let target = self.full(&fd, &src_path);
        let dest = self.full(&fd, &dest_path);
        self.check(ImportCall::FsRead { path: target }).await?;
        let seq = self
            .check(ImportCall::FsWrite { path: dest.clone() })
            .await?;
        let r = self.inner.symlink_at(fd, src_path, dest_path).await;
        self.record(seq, &dest, &r);
        r
    }

    async fn unlink_file_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let full = self.full(&fd, &path);
        let seq = self
            .check(ImportCall::FsDelete { path: full.clone() })
            .await?;
        let r = self.inner.unlink_file_at(fd, path).await;
        self.record(seq, &full, &r);
        r
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynInputStream>> {
        self.inner.read_via_stream(fd, offset)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        self.inner.write_via_stream(fd, offset)
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<Resource<DynOutputStream>> {
        self.inner.append_via_stream(fd)
    }

    async fn is_same_object(
        &mut self,
        a: Resource<types::Descriptor>,
        b: Resource<types::Descriptor>,
    ) -> wasmtime::Result<bool> {
        self.inner.is_same_object(a, b).await
    }

    async fn metadata_hash(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<types::MetadataHashValue> {
        self.inner.metadata_hash(fd).await
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        let full = self.full(&fd, &path);
        let seq = self
            .check(ImportCall::FsRead { path: full.clone() })
            .await?;
        let r = self.inner.metadata_hash_at(fd, path_flags, path).await;
        self.record(seq, &full, &r);
        r
    }
}

impl HostDirectoryEntryStream for FsView<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<ReaddirIterator>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        self.inner.read_directory_entry(stream).await
    }

    fn drop(&mut self, stream: Resource<ReaddirIterator>) -> wasmtime::Result<()> {
        HostDirectoryEntryStream::drop(&mut self.inner, stream)
    }
}
