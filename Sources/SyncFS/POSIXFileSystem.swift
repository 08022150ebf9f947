#if canImport(Glibc)
import Glibc
#endif
import SyncCore

/// The real filesystem under a folder root, confined to it.
///
/// Every operation resolves its path (path text, `RelativePath`) from a descriptor of the root,
/// one component at a time, with `openat(Self.oPath | O_DIRECTORY | O_NOFOLLOW)`: a component that is
/// a symlink, or anything but a real directory, ends the resolution with `ENOTDIR` — it is never
/// followed — and ".", ".." and empty components are refused (`EINVAL`). The final operation is
/// the `*at` call on the parent's descriptor with the last name, never following a final symlink
/// (`AT_SYMLINK_NOFOLLOW`, `O_NOFOLLOW`, `renameat`/`linkat`/`unlinkat` do not follow). So nothing
/// done through this type reads or writes outside the folder, whatever the folder holds or held
/// (Docs/security.md, "The folder is a boundary"). It is the one place where syncd's apply path
/// touches a folder; SyncDaemon's sources do no path-based system calls in folders of their own.
///
/// A directory the daemon owns but may not write (mode 0555 on the receiver, as on the writer) is
/// made writable for the one operation that changes it and its mode restored at once.
public struct POSIXFileSystem: WritableFileSystem {
    public let root: String

    public init(root: String) {
        self.root = root.count > 1 && root.hasSuffix("/") ? String(root.dropLast()) : root
    }

    // MARK: reading

    public func metadata(_ path: String) throws -> FileMetadata? {
        if path.isEmpty {   // the root itself (followed if the user's folder path is a symlink)
            var st = stat()
            if stat(root, &st) != 0 { if Self.isAbsence(errno) { return nil }; throw Self.error(path, "stat") }
            return Self.metadata(st)
        }
        let parent: Parent
        do { parent = try resolve(path, creatingParents: false) } catch let e as FileSystemError where Self.isAbsence(e.errno) {
            return nil   // a parent is missing, or is not a directory: nothing is at `path` inside the folder
        }
        defer { parent.close() }
        var st = stat()
        let rc = parent.name.withUnsafeBufferPointer { fstatat(parent.fd, $0.baseAddress!, &st, AT_SYMLINK_NOFOLLOW) }
        if rc != 0 {
            if Self.isAbsence(errno) { return nil }
            throw Self.error(path, "lstat")
        }
        guard var m = Self.metadata(st) else { return nil }  // sockets, fifos, devices are not synced
        if m.kind == .symlink { m.symlinkTarget = try readLink(parent, path) }
        return m
    }

    public func list(_ directory: String) throws -> [String] {
        let fd = try openDirectory(directory)
        guard let dir = fdopendir(fd) else { let e = Self.error(directory, "opendir"); Glibc.close(fd); throw e }
        defer { closedir(dir) }
        var names: [String] = []
        while let ent = readdir(dir) {
            let name = withUnsafeBytes(of: ent.pointee.d_name) { raw in
                RelativePath.text(fromBytes: raw.prefix { $0 != 0 })
            }
            if name == "." || name == ".." { continue }
            names.append(name)
        }
        return names
    }

    /// O_NOATIME (Linux, needs _GNU_SOURCE in C so Glibc does not export it): reading to hash
    /// must not dirty inodes.
    static let noatime: Int32 = 0o1000000

    public func openForReading(_ path: String) throws -> any FileReader {
        let parent = try resolve(path, creatingParents: false)
        defer { parent.close() }
        // O_NONBLOCK: a file swapped for a FIFO must not block the open (reads of regular files ignore it).
        var fd = parent.open(O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | Self.noatime)
        if fd < 0 && errno == EPERM { fd = parent.open(O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK) }  // O_NOATIME needs ownership
        guard fd >= 0 else { throw Self.error(path, "open") }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            Glibc.close(fd)
            throw FileSystemError(path: path, operation: "open", errno: EINVAL, message: "not a regular file")
        }
        return POSIXFileReader(fd: fd, path: path)
    }

    /// `count` bytes at `offset` of the regular file at `path`, or nil (missing, shorter, a symlink…).
    public func read(_ path: String, offset: Int64, count: Int) -> [UInt8]? {
        guard let reader = try? openForReading(path) as? POSIXFileReader else { return nil }
        defer { reader.close() }
        return reader.read(offset: offset, count: count)
    }

    // MARK: writing

    public func makeDirectory(_ path: String, mode: UInt32) throws {
        let parent = try resolve(path, creatingParents: true)
        defer { parent.close() }
        try parent.changing(path, "mkdir") { fd, name in mkdirat(fd, name, mode_t(mode)) }
    }

    public func createFile(_ path: String, mode: UInt32) throws -> any FileWriter {
        let parent = try resolve(path, creatingParents: true)
        defer { parent.close() }
        var fd: Int32 = -1
        try parent.changing(path, "create") { dirfd, name in
            fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode_t(mode))
            return fd
        }
        return POSIXFileWriter(fd: fd, path: path)
    }

    public func rename(_ from: String, to: String, replacing: Bool) throws {
        let source = try resolve(from, creatingParents: false)
        defer { source.close() }
        let target = try resolve(to, creatingParents: true)
        defer { target.close() }
        try source.name.withUnsafeBufferPointer { sname in
            try target.name.withUnsafeBufferPointer { tname in
                try Self.changing([source, target], to, "rename") {
                    renameat2(source.fd, sname.baseAddress!, target.fd, tname.baseAddress!, replacing ? 0 : Self.renameNoReplace)
                }
            }
        }
    }

    public func link(_ existing: String, to new: String) throws {
        let source = try resolve(existing, creatingParents: false)
        defer { source.close() }
        let target = try resolve(new, creatingParents: true)
        defer { target.close() }
        try source.name.withUnsafeBufferPointer { sname in
            try target.changing(new, "link") { tfd, tname in linkat(source.fd, sname.baseAddress!, tfd, tname, 0) }
        }
    }

    public func remove(_ path: String) throws {
        let parent = try resolve(path, creatingParents: false)
        defer { parent.close() }
        var st = stat()
        guard parent.name.withUnsafeBufferPointer({ fstatat(parent.fd, $0.baseAddress!, &st, AT_SYMLINK_NOFOLLOW) }) == 0 else {
            throw Self.error(path, "lstat")
        }
        let flags = (st.st_mode & S_IFMT) == S_IFDIR ? AT_REMOVEDIR : 0
        try parent.changing(path, "remove") { fd, name in unlinkat(fd, name, flags) }
    }

    public func setMode(_ path: String, _ mode: UInt32) throws {
        let parent = try resolve(path, creatingParents: false)
        defer { parent.close() }
        // AT_SYMLINK_NOFOLLOW: glibc changes the object itself (through Self.oPath) and refuses a symlink.
        let rc = parent.name.withUnsafeBufferPointer { fchmodat(parent.fd, $0.baseAddress!, mode_t(mode & 0o7777), AT_SYMLINK_NOFOLLOW) }
        if rc != 0 { throw Self.error(path, "chmod") }
    }

    public func setOwner(_ path: String, uid: UInt32?, gid: UInt32?) throws {
        let parent = try resolve(path, creatingParents: false)
        defer { parent.close() }
        let rc = parent.name.withUnsafeBufferPointer {
            fchownat(parent.fd, $0.baseAddress!, uid.map { uid_t($0) } ?? uid_t.max, gid.map { gid_t($0) } ?? gid_t.max, AT_SYMLINK_NOFOLLOW)
        }
        if rc != 0 { throw Self.error(path, "chown") }
    }

    public func setModificationTime(_ path: String, _ ns: Int64) throws {
        let parent = try resolve(path, creatingParents: false)
        defer { parent.close() }
        var times = [timespec(tv_sec: 0, tv_nsec: Self.utimeOmit), Self.timeSpec(ns)]
        let rc = parent.name.withUnsafeBufferPointer { utimensat(parent.fd, $0.baseAddress!, &times, AT_SYMLINK_NOFOLLOW) }
        if rc != 0 { throw Self.error(path, "utimes") }
    }

    public func makeSymlink(_ path: String, target: String) throws {
        guard let bytes = RelativePath.bytes(target), !bytes.contains(0) else {
            throw FileSystemError(path: path, operation: "symlink", errno: EINVAL, message: "link target is not a name")
        }
        let parent = try resolve(path, creatingParents: true)
        defer { parent.close() }
        let cTarget = bytes.map { CChar(bitPattern: $0) } + [0]
        try cTarget.withUnsafeBufferPointer { t in
            try parent.changing(path, "symlink") { fd, name in symlinkat(t.baseAddress!, fd, name) }
        }
    }

    public func synchronize(_ path: String) throws {
        let fd = try openDirectoryOrFile(path)
        defer { Glibc.close(fd) }
        if fsync(fd) != 0 { throw Self.error(path, "fsync") }
    }

    // MARK: resolution

    /// An open descriptor of a path's parent directory inside the folder, and the last name.
    struct Parent {
        let fd: Int32
        /// The last component's bytes, NUL-terminated.
        let name: [CChar]

        func close() { Glibc.close(fd) }

        func open(_ flags: Int32) -> Int32 {
            name.withUnsafeBufferPointer { openat(fd, $0.baseAddress!, flags) }
        }

        /// Runs an operation that changes this directory (see `POSIXFileSystem.changing`).
        func changing(_ path: String, _ op: String, _ body: (Int32, UnsafePointer<CChar>) -> Int32) throws {
            try name.withUnsafeBufferPointer { n in
                try POSIXFileSystem.changing([self], path, op) { body(fd, n.baseAddress!) }
            }
        }
    }

    /// Runs an operation that changes the directories `dirs` (it returns < 0 and sets errno on
    /// failure). When it fails with EACCES and a directory is ours but lacks owner write/search
    /// permission (a read-only directory synced as it is on the writer), grants them for this one
    /// operation and puts the modes back.
    static func changing(_ dirs: [Parent], _ path: String, _ op: String, _ body: () -> Int32) throws {
        if body() >= 0 { return }
        guard errno == EACCES else { throw error(path, op) }
        var granted: [(String, mode_t)] = []
        defer { for (proc, mode) in granted { _ = chmod(proc, mode) } }
        for dir in dirs {
            var st = stat()
            guard fstat(dir.fd, &st) == 0, st.st_uid == geteuid(), (st.st_mode & 0o300) != 0o300 else { continue }
            let proc = "/proc/self/fd/\(dir.fd)"   // chmod through an Self.oPath descriptor
            if chmod(proc, st.st_mode & 0o7777 | 0o300) == 0 { granted.append((proc, st.st_mode & 0o7777)) }
        }
        guard !granted.isEmpty else { throw error(path, op, EACCES) }
        if body() < 0 { throw error(path, op) }
    }

    /// Opens the root and walks `path`'s parent components without following any symlink.
    /// With `creatingParents`, missing directories are made (mode 0777 less the umask, like `mkdir -p`).
    /// Throws ENOTDIR when a component is a symlink or not a directory, EINVAL for a malformed path.
    func resolve(_ path: String, creatingParents: Bool) throws -> Parent {
        guard let bytes = RelativePath.bytes(path), !bytes.isEmpty, !bytes.contains(0) else {
            throw FileSystemError(path: path, operation: "resolve", errno: EINVAL, message: "not a path inside the folder")
        }
        let components = bytes.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        for c in components where c.isEmpty || c.elementsEqual([0x2E]) || c.elementsEqual([0x2E, 0x2E]) {
            throw FileSystemError(path: path, operation: "resolve", errno: EINVAL, message: "'.', '..' or empty component")
        }
        var fd = Glibc.open(root, Self.oPath | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw Self.error("", "open folder root") }
        for component in components.dropLast() {
            let name = component.map { CChar(bitPattern: $0) } + [0]
            var next = name.withUnsafeBufferPointer { openat(fd, $0.baseAddress!, Self.oPath | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            if next < 0 && errno == ENOENT && creatingParents {
                let dir = Parent(fd: fd, name: name)
                do {
                    try dir.changing(path, "mkdir") { d, n in
                        let rc = mkdirat(d, n, 0o777)
                        return rc != 0 && errno == EEXIST ? 0 : rc   // made meanwhile: fine if it is a directory
                    }
                } catch { Glibc.close(fd); throw error }
                next = name.withUnsafeBufferPointer { openat(fd, $0.baseAddress!, Self.oPath | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            }
            let code = errno
            Glibc.close(fd)
            // Self.oPath | O_NOFOLLOW opens a symlink itself; O_DIRECTORY then refuses it with ENOTDIR.
            guard next >= 0 else { throw Self.error(path, "resolve", code == ELOOP ? ENOTDIR : code) }
            fd = next
        }
        return Parent(fd: fd, name: components.last!.map { CChar(bitPattern: $0) } + [0])
    }

    /// A readable descriptor of a directory inside the folder ("" is the root), never through a symlink.
    func openDirectory(_ path: String) throws -> Int32 {
        if path.isEmpty {
            let fd = Glibc.open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard fd >= 0 else { throw Self.error("", "open folder root") }
            return fd
        }
        let parent = try resolve(path, creatingParents: false)
        defer { parent.close() }
        let fd = parent.open(O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw Self.error(path, "opendir", errno == ELOOP ? ENOTDIR : errno) }
        return fd
    }

    private func openDirectoryOrFile(_ path: String) throws -> Int32 {
        if path.isEmpty { return try openDirectory(path) }
        let parent = try resolve(path, creatingParents: false)
        defer { parent.close() }
        let fd = parent.open(O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw Self.error(path, "open") }
        return fd
    }

    private func readLink(_ parent: Parent, _ path: String) throws -> String {
        var buf = [UInt8](repeating: 0, count: 4097)
        let n = parent.name.withUnsafeBufferPointer { name in
            buf.withUnsafeMutableBytes { readlinkat(parent.fd, name.baseAddress!, $0.baseAddress!.assumingMemoryBound(to: CChar.self), 4096) }
        }
        if n < 0 { throw Self.error(path, "readlink") }
        return RelativePath.text(fromBytes: buf[..<n])
    }

    /// Errors that mean "nothing is there" rather than a failure.
    static func isAbsence(_ code: Int32) -> Bool { code == ENOENT || code == ENOTDIR }

    /// O_PATH (Linux, hidden behind _GNU_SOURCE): a descriptor that only names a place in the tree.
    static let oPath: Int32 = 0o10000000

    /// UTIME_OMIT (sys/stat.h): leave this one of the two times as it is.
    static let utimeOmit = (1 << 30) - 2

    /// RENAME_NOREPLACE (linux/fs.h): fail with EEXIST instead of replacing the target.
    static let renameNoReplace: UInt32 = 1

    /// Nanoseconds since the epoch as a timespec, rounding toward negative infinity so a time
    /// before 1970 with a fraction keeps 0 ≤ tv_nsec < 10⁹ (utimensat refuses anything else).
    public static func timeSpec(_ ns: Int64) -> timespec {
        var seconds = ns / 1_000_000_000, rest = ns % 1_000_000_000
        if rest < 0 { seconds -= 1; rest += 1_000_000_000 }
        return timespec(tv_sec: Int(seconds), tv_nsec: Int(rest))
    }

    static func metadata(_ st: stat) -> FileMetadata? {
        let kind: FileKind
        switch st.st_mode & S_IFMT {
        case S_IFREG: kind = .file
        case S_IFDIR: kind = .directory
        case S_IFLNK: kind = .symlink
        default: return nil
        }
        return FileMetadata(kind: kind, size: kind == .directory ? 0 : Int64(st.st_size), mode: UInt32(st.st_mode & 0o7777),
                            mtimeNs: Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec),
                            ctimeNs: Int64(st.st_ctim.tv_sec) * 1_000_000_000 + Int64(st.st_ctim.tv_nsec),
                            inode: UInt64(st.st_ino), nlink: UInt32(st.st_nlink))
    }

    static func error(_ path: String, _ op: String, _ code: Int32 = errno) -> FileSystemError {
        FileSystemError(path: path, operation: op, errno: code, message: String(cString: strerror(code)))
    }
}

final class POSIXFileReader: FileReader {
    private var fd: Int32
    private let path: String

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
        _ = posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL)
    }

    deinit { close() }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            throw POSIXFileSystem.error(path, "read")
        }
    }

    /// Exactly `count` bytes at `offset`, or nil.
    func read(offset: Int64, count: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: count)
        let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
        return n == count ? out : nil
    }

    func metadata() throws -> FileMetadata {
        var st = stat()
        if fstat(fd, &st) != 0 { throw POSIXFileSystem.error(path, "fstat") }
        guard let m = POSIXFileSystem.metadata(st) else {
            throw FileSystemError(path: path, operation: "fstat", errno: EINVAL, message: "not a regular file")
        }
        return m
    }

    func close() {
        if fd >= 0 { _ = Glibc.close(fd); fd = -1 }
    }
}

final class POSIXFileWriter: FileWriter {
    private var fd: Int32
    let path: String

    init(fd: Int32, path: String) { self.fd = fd; self.path = path }
    deinit { close() }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if n > 0 { done += n; continue }
            let code = n < 0 ? errno : ENOSPC   // a short write of 0: the next call would say why
            if code == EINTR { continue }
            throw POSIXFileSystem.error(path, "write", code)
        }
    }

    func truncate(_ size: Int64) throws {
        if ftruncate(fd, off_t(size)) != 0 { throw POSIXFileSystem.error(path, "truncate") }
    }

    func setMode(_ mode: UInt32) throws {
        if fchmod(fd, mode_t(mode & 0o7777)) != 0 { throw POSIXFileSystem.error(path, "chmod") }
    }

    func setModificationTime(_ ns: Int64) throws {
        var times = [timespec(tv_sec: 0, tv_nsec: POSIXFileSystem.utimeOmit), POSIXFileSystem.timeSpec(ns)]
        if futimens(fd, &times) != 0 { throw POSIXFileSystem.error(path, "utimes") }
    }

    func startWriteBack(offset: Int64, count: Int64) {
        _ = linuxSyncFileRange(fd, offset, count, 2 /* SYNC_FILE_RANGE_WRITE */)
    }

    func synchronize() throws {
        if fsync(fd) != 0 { throw POSIXFileSystem.error(path, "fsync") }
    }

    func close() {
        if fd >= 0 { _ = Glibc.close(fd); fd = -1 }
    }
}

/// renameat2(2) (glibc ≥ 2.28); Glibc's module map hides it behind _GNU_SOURCE.
@_silgen_name("renameat2")
private func renameat2(_ olddirfd: Int32, _ oldpath: UnsafePointer<CChar>, _ newdirfd: Int32, _ newpath: UnsafePointer<CChar>,
                       _ flags: UInt32) -> Int32

/// sync_file_range(2): Glibc's module map hides it behind _GNU_SOURCE.
@_silgen_name("sync_file_range")
private func linuxSyncFileRange(_ fd: Int32, _ offset: Int64, _ count: Int64, _ flags: UInt32) -> Int32
