import SyncCore

/// The narrow view of a folder's filesystem that scanning needs. Paths are relative to the
/// folder root ("" is the root itself), '/'-separated, in path text (`RelativePath`): names are
/// bytes, and `list` returns them, and `FileMetadata.symlinkTarget`, as path text. Implementations: `POSIXFileSystem`
/// (the real disk) and `FakeFileSystem` (in memory, for tests).
public protocol FileSystem: Sendable {
    /// lstat: metadata of the path itself (symlinks are never followed), nil when it does not exist.
    func metadata(_ path: String) throws -> FileMetadata?
    /// Names in a directory (no "." or ".."), in no particular order.
    func list(_ directory: String) throws -> [String]
    /// Opens a regular file for reading without following a final symlink.
    func openForReading(_ path: String) throws -> any FileReader
    /// Exactly `count` bytes at `offset` of the regular file at `path` (a final symlink not
    /// followed), or nil: missing, shorter, not a regular file, unreadable.
    func read(_ path: String, offset: Int64, count: Int) -> [UInt8]?
}

public protocol FileReader: AnyObject {
    /// Reads up to `buffer.count` bytes; 0 at end of file.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
    /// fstat of the open file.
    func metadata() throws -> FileMetadata
    func close()
}

/// The write side: every change syncd makes in a folder, for a peer or for itself. Paths are path
/// text relative to the folder root; no operation follows a symlink, in any component, or leaves
/// the folder (`POSIXFileSystem` says how). Failures throw `FileSystemError` with the errno.
public protocol WritableFileSystem: FileSystem {
    /// mkdir; the parent directories are made if missing. EEXIST if anything is at `path`.
    func makeDirectory(_ path: String, mode: UInt32) throws
    /// A new regular file (O_EXCL: EEXIST if anything is at `path`), open for writing.
    func createFile(_ path: String, mode: UInt32) throws -> any FileWriter
    /// rename; with `replacing: false` EEXIST when `to` exists (RENAME_NOREPLACE). A symlink at
    /// `from` or `to` is renamed or replaced itself, never followed.
    func rename(_ from: String, to: String, replacing: Bool) throws
    /// A hard link `new` to the file at `existing` (never to a symlink's target).
    func link(_ existing: String, to new: String) throws
    /// unlink a file or symlink, rmdir an empty directory (ENOTEMPTY otherwise).
    func remove(_ path: String) throws
    /// chmod of permission bits (07777); a symlink is refused (EOPNOTSUPP), never followed.
    func setMode(_ path: String, _ mode: UInt32) throws
    /// Sets the modification time (nanoseconds since the epoch, negative before 1970).
    func setModificationTime(_ path: String, _ ns: Int64) throws
    /// A symlink at `path` whose target is `target` (path text of the target's bytes).
    func makeSymlink(_ path: String, target: String) throws
    /// fsync of a file or directory ("" is the folder root).
    func synchronize(_ path: String) throws
    /// lchown: the owner and/or group (nil leaves it) of the object itself, a symlink never followed.
    func setOwner(_ path: String, uid: UInt32?, gid: UInt32?) throws
}

extension WritableFileSystem {
    /// Removes `path` and, if it is a directory, everything under it — symlinks inside are
    /// removed, never followed.
    public func removeTree(_ path: String) throws {
        guard !path.isEmpty else {   // never the folder itself
            throw FileSystemError(path: path, operation: "remove", errno: 22 /* EINVAL */, message: "refusing to remove the folder root")
        }
        guard let m = try metadata(path) else { return }
        if m.kind == .directory {
            for name in try list(path) { try removeTree(RelativePath.join(path, name)) }
        }
        try remove(path)
    }
}

/// A file open for writing (from `WritableFileSystem.createFile`).
public protocol FileWriter: AnyObject {
    /// Writes all of `bytes` at `offset` (short writes continued; ENOSPC/EDQUOT thrown).
    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws
    /// Sets the size (a hole where nothing was written).
    func truncate(_ size: Int64) throws
    func setMode(_ mode: UInt32) throws
    func setModificationTime(_ ns: Int64) throws
    /// Starts writing `count` bytes at `offset` to disk without waiting (write-behind).
    func startWriteBack(offset: Int64, count: Int64)
    func synchronize() throws
    func close()
}

public struct FileSystemError: Error, CustomStringConvertible, Equatable {
    public var path: String
    public var operation: String
    public var errno: Int32
    public var message: String

    public init(path: String, operation: String, errno: Int32, message: String) {
        self.path = path; self.operation = operation; self.errno = errno; self.message = message
    }

    public var description: String { "\(operation) \(path.isEmpty ? "." : RelativePath.display(path)): \(message)" }
}

extension FileSystem {
    /// Reads a whole small file (e.g. `.syncignore`); nil when missing.
    public func readSmallFile(_ path: String, limit: Int = 1 << 20) throws -> [UInt8]? {
        guard let m = try metadata(path), m.kind == .file else { return nil }
        let reader = try openForReading(path)
        defer { reader.close() }
        var out = [UInt8](repeating: 0, count: min(Int(m.size), limit))
        var filled = 0
        while filled < out.count {
            let n = try out.withUnsafeMutableBytes { try reader.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[filled...])) }
            if n == 0 { break }
            filled += n
        }
        return Array(out[..<filled])
    }
}
