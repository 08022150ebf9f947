#if canImport(Glibc)
import Glibc
#endif
import SyncCore

/// An in-memory filesystem for tests and simulations. Thread-safe; paths relative, "" is the root
/// directory, in path text like every path in syncd (`RelativePath`: "caf%C3%A9" is `café` in NFC).
///
/// **The write side** (`WritableFileSystem`) behaves like `POSIXFileSystem` on Linux, errno for
/// errno (FakeFileSystemConformanceTests runs the same operations, scripted and random, on both):
/// - a path is resolved one component at a time and nothing is ever followed: a component that is
///   a symlink or a file gives `ENOTDIR`, a missing one `ENOENT` (or is made, mode 0777 less
///   `umask`, by the operations that make parents: makeDirectory, createFile, makeSymlink and the
///   target side of rename and link, before the operation itself may fail), an empty path, an
///   empty, "." or ".." component, a NUL or text that is not path text `EINVAL`, a name over 255
///   bytes `ENAMETOOLONG`;
/// - makeDirectory, createFile, makeSymlink, link and `rename(replacing: false)` give `EEXIST`
///   when anything (a dangling symlink too) is at the new name; remove of a non-empty directory
///   `ENOTEMPTY`; link of a directory `EPERM`; setMode of a symlink `EOPNOTSUPP`; synchronize
///   and openForReading of a symlink `ELOOP`; openForReading of a directory `EINVAL`;
///   makeSymlink with an empty target `ENOENT`;
/// - rename follows rename(2): a missing source `ENOENT`, then `EEXIST` (not replacing), a
///   directory into itself `EINVAL`, onto its own ancestor `ENOTEMPTY`, two names of one inode
///   succeed and change nothing, a directory onto a non-directory `ENOTDIR`, a non-directory onto
///   a directory `EISDIR`, onto a non-empty directory `ENOTEMPTY`;
/// - modes are kept as given (07777; creation masks `umask`), and permissions are never checked
///   (the real one makes the daemon's own read-only directories writable for the one change).
/// `list` returns names sorted (byte order), so a seeded run replays exactly.
///
/// **The test helpers** (`write`, `link(_:_:)`, `mkdir`, `symlink`, `chmod`, `delete`,
/// `rename(_:_:)`) are the world changing the folder (a user, another program): lenient (they make
/// parents, replace what is in the way), never counted, faulted or refused — not even while
/// `crashed` — and, like any change, not durable until synchronized. Each write bumps a fake clock
/// so mtime/ctime change like on a real disk. Regular files may have several names: a write or
/// chmod through one shows under all, as on a real disk.
///
/// **Durability** (what `crash()` keeps), per inode, like fsync(2) promises and no more:
/// - a file's content, size, mode and times are durable as they were at its last `synchronize`
///   (its writer's, or `synchronize(path)`); a new file is durable as empty, with the mode it was
///   made with, until then; a symlink is durable whole from its making;
/// - a directory's entries (names made, renamed in or out, removed) and its own mode and times are
///   durable as they were at its last `synchronize(dir)`; a new directory is durable empty;
/// - `synchronize("")` (the root) makes everything durable, like syncfs(2).
/// After a crash the tree is what the durable entries reach from the root's, with each inode's
/// durable state. Directories are independent, so a rename whose target directory was synchronized
/// and whose source directory was not leaves both names (a hard link for a file); a directory
/// reached twice that way keeps only its first name in breadth-first, byte-ordered order, and
/// every directory its own contents — never two names or a cycle. This is what POSIX promises and
/// no more: a journaling filesystem often keeps more (ext4 commits every earlier rename with any
/// fsync), so code that survives the fake's crashes survives theirs. `durableSnapshot()` shows
/// what a crash would leave without crashing.
///
/// **Faults** for a simulator driven by a seed: `beforeOperation` sees each write-side
/// `Operation` first (and may change the tree with the helpers), then `fault` may answer a
/// `FaultAction`: fail with an errno changing nothing, or crash the machine before or after the
/// operation. Once `crashed`, every operation (reads too, `read` answers nil; not the helpers or
/// the snapshots) throws `EIO` until `restart()`, which reverts to the durable state like a reboot.
/// `operationCount` counts the write-side operations attempted.
public final class FakeFileSystem: WritableFileSystem, @unchecked Sendable {
    // MARK: the model

    /// One inode: a regular file, a directory (its entries) or a symlink (its target).
    private struct Inode {
        var kind: FileKind
        var mode: UInt32
        var mtimeNs: Int64
        var ctimeNs: Int64
        /// Owner and group (0 until `setOwner`).
        var uid: UInt32 = 0
        var gid: UInt32 = 0
        /// Names of a file or symlink (directories count theirs, 2 + subdirectories, when asked).
        var nlink: UInt32 = 0
        var content: [UInt8] = []
        var target: String?
        /// Name (path text) → inode.
        var entries: [String: UInt64] = [:]

        /// What is durable of a new inode before any synchronize: a file empty, a directory
        /// without entries, a symlink whole.
        var asMade: Inode {
            var n = self
            n.content = []
            n.entries = [:]
            return n
        }
    }

    private var inodes: [UInt64: Inode] = [:]
    /// nil once a test deleted the folder itself (`delete("")`).
    private var root: UInt64?
    /// Each inode as a crash would leave it (see the type's comment); reached from `durableRoot`.
    private var durable: [UInt64: Inode] = [:]
    private var durableRoot: UInt64?
    private var clock: Int64 = 1_000_000_000
    private var nextInode: UInt64 = 1
    /// Bumped by `crash()`: writers opened before it (by a process that died) refuse with EBADF.
    private var generation = 0
    private var isCrashed = false
    private var operations = 0
    private var faultHook: (@Sendable (Operation) -> FaultAction?)?
    private var beforeHook: ((Operation) -> Void)?
    private let lock = Lock()

    /// The process umask that creation modes are masked with (as `POSIXFileSystem` gets them).
    public let umask: UInt32

    /// Called after each read of a file; tests use it to modify a file while it is being hashed.
    public var onRead: ((String) -> Void)?

    public init(umask: UInt32 = 0o022) {
        self.umask = umask & 0o777
        let r = allocate(Inode(kind: .directory, mode: 0o755, mtimeNs: clock, ctimeNs: clock))
        root = r
        durableRoot = r
    }

    // MARK: faults

    /// One write-side call, as `beforeOperation` and `fault` see it. Paths are those passed; a
    /// writer's operations carry the path its file was created under.
    public enum Operation: Hashable, Sendable, CustomStringConvertible {
        case makeDirectory(String, mode: UInt32)
        case createFile(String, mode: UInt32)
        case rename(String, to: String, replacing: Bool)
        case link(String, to: String)
        case remove(String)
        case setMode(String, UInt32)
        case setModificationTime(String, Int64)
        case makeSymlink(String, target: String)
        case synchronize(String)
        case setOwner(String, uid: UInt32?, gid: UInt32?)
        /// `FileWriter.write` of `count` bytes.
        case write(String, offset: Int64, count: Int)
        case truncate(String, size: Int64)
        case setFileMode(String, UInt32)
        case setFileModificationTime(String, Int64)
        case synchronizeFile(String)

        public enum Kind: String, CaseIterable, Hashable, Sendable {
            case makeDirectory, createFile, rename, link, remove, setMode, setModificationTime, makeSymlink, synchronize, setOwner
            case write, truncate, setFileMode, setFileModificationTime, synchronizeFile
        }

        public var kind: Kind {
            switch self {
            case .makeDirectory: return .makeDirectory
            case .createFile: return .createFile
            case .rename: return .rename
            case .link: return .link
            case .remove: return .remove
            case .setMode: return .setMode
            case .setModificationTime: return .setModificationTime
            case .makeSymlink: return .makeSymlink
            case .synchronize: return .synchronize
            case .setOwner: return .setOwner
            case .write: return .write
            case .truncate: return .truncate
            case .setFileMode: return .setFileMode
            case .setFileModificationTime: return .setFileModificationTime
            case .synchronizeFile: return .synchronizeFile
            }
        }

        /// The paths involved: one, or source and target for rename and link.
        public var paths: [String] {
            switch self {
            case .makeDirectory(let p, _), .createFile(let p, _), .remove(let p), .setMode(let p, _),
                 .setModificationTime(let p, _), .makeSymlink(let p, _), .synchronize(let p), .setOwner(let p, _, _), .write(let p, _, _),
                 .truncate(let p, _), .setFileMode(let p, _), .setFileModificationTime(let p, _), .synchronizeFile(let p):
                return [p]
            case .rename(let a, let b, _), .link(let a, let b):
                return [a, b]
            }
        }

        public var description: String { "\(kind.rawValue) \(paths.map { $0.isEmpty ? "." : $0 }.joined(separator: " -> "))" }
    }

    /// What `fault` makes of an operation.
    public enum FaultAction: Hashable, Sendable {
        /// The operation changes nothing and throws `FileSystemError` with this errno
        /// (EACCES, ENOSPC, EIO, EEXIST…).
        case fail(Int32)
        /// The machine stops before the operation: it changes nothing and throws EIO, and `crashed` is set.
        case crashBefore
        /// The operation happens (returns or throws as it would), then the machine stops: `crashed` is set.
        case crashAfter
    }

    /// Asked for each write-side operation (after `beforeOperation`), outside the lock; nil
    /// lets it run. Deterministic for a seeded simulator as long as the closure is.
    public var fault: (@Sendable (Operation) -> FaultAction?)? {
        get { lock.withLock { faultHook } }
        set { lock.withLock { faultHook = newValue } }
    }

    /// Called before each write-side operation, outside the lock, so it may change the tree with
    /// the helpers ("a path changed underneath"). Not while `crashed`. Calling a write-side
    /// method from it would call it again.
    public var beforeOperation: ((Operation) -> Void)? {
        get { lock.withLock { beforeHook } }
        set { lock.withLock { beforeHook = newValue } }
    }

    /// Write-side operations attempted since `init` (each one `beforeOperation` and `fault` saw;
    /// not those refused while crashed).
    public var operationCount: Int { lock.withLock { operations } }

    /// True from a `.crashBefore`/`.crashAfter` fault until `restart()`: every operation throws EIO.
    public var crashed: Bool { lock.withLock { isCrashed } }

    /// The reboot after a crash: the tree reverts to its durable state (`crash()`) and operations
    /// work again. Writers from before refuse (EBADF).
    public func restart() {
        lock.withLock {
            revertToDurable()
            isCrashed = false
        }
    }

    /// Power loss: the tree reverts to its durable state (see the type's comment) at once.
    /// Writers opened before refuse from now on (EBADF). Does not set `crashed`.
    public func crash() {
        lock.withLock { revertToDurable() }
    }

    /// The caller holds the lock.
    private func revertToDurable() {
        generation += 1
        let (nodes, r) = Self.rebuilt(durable, root: durableRoot)
        inodes = nodes; root = r
        durable = nodes; durableRoot = r
    }

    /// The tree the durable entries reach from `root`, breadth first in byte order of names: a
    /// directory reached again is dropped there; names of files and symlinks are counted anew.
    private static func rebuilt(_ durable: [UInt64: Inode], root: UInt64?) -> ([UInt64: Inode], UInt64?) {
        guard let root, let r = durable[root] else { return ([:], nil) }
        var live: [UInt64: Inode] = [root: r]
        var queue = [root], next = 0
        while next < queue.count {
            let dir = queue[next]
            next += 1
            var kept: [String: UInt64] = [:]
            for (name, child) in live[dir]!.entries.sorted(by: { $0.key < $1.key }) {
                guard let node = durable[child] else { continue }
                if node.kind == .directory {
                    if live[child] != nil { continue }
                    live[child] = node
                    queue.append(child)
                } else {
                    if live[child] == nil { live[child] = node; live[child]!.nlink = 0 }
                    live[child]!.nlink += 1
                }
                kept[name] = child
            }
            live[dir]!.entries = kept
        }
        return (live, root)
    }

    /// Runs write-side `op`: refused while crashed, shown to `beforeOperation`, counted, then as
    /// `fault` says; `body` runs under the lock.
    private func perform<T>(_ op: Operation, _ body: () throws -> T) throws -> T {
        let path = op.paths.last ?? ""
        let before = try lock.withLock { () throws -> ((Operation) -> Void)? in
            if isCrashed { throw Self.error(path, "\(op.kind)", EIO) }
            return beforeHook
        }
        before?(op)
        let hook = try lock.withLock { () throws -> (@Sendable (Operation) -> FaultAction?)? in
            if isCrashed { throw Self.error(path, "\(op.kind)", EIO) }
            operations += 1
            return faultHook
        }
        let action = hook?(op)
        func run() throws -> T {
            try lock.withLock {
                if isCrashed { throw Self.error(path, "\(op.kind)", EIO) }
                return try body()
            }
        }
        switch action {
        case nil:
            return try run()
        case .fail(let code):
            throw Self.error(path, "\(op.kind)", code)
        case .crashBefore:
            lock.withLock { isCrashed = true }
            throw Self.error(path, "\(op.kind)", EIO)
        case .crashAfter:
            defer { lock.withLock { isCrashed = true } }
            return try run()
        }
    }

    // MARK: snapshots

    /// One path of a `snapshot`: what a test compares (no times, no inode numbers).
    public struct Entry: Hashable, Sendable, CustomStringConvertible {
        public var kind: FileKind
        /// Permission bits (07777); 0777 for a symlink.
        public var mode: UInt32
        /// A regular file's bytes; nil otherwise.
        public var content: [UInt8]?
        /// A symlink's target (path text); nil otherwise.
        public var symlinkTarget: String?
        /// st_nlink: names of a file or symlink, 2 + subdirectories of a directory.
        public var links: UInt32

        public init(kind: FileKind, mode: UInt32, content: [UInt8]? = nil, symlinkTarget: String? = nil, links: UInt32 = 1) {
            self.kind = kind; self.mode = mode; self.content = content; self.symlinkTarget = symlinkTarget; self.links = links
        }

        public var description: String {
            let what: String
            switch kind {
            case .file: what = "file \(content?.count ?? 0) bytes \(content.map { Array($0.prefix(16)) } ?? [])"
            case .directory: what = "dir"
            case .symlink: what = "symlink -> \(symlinkTarget ?? "?")"
            }
            return "\(what) mode \(String(mode, radix: 8)) links \(links)"
        }
    }

    /// Every path below the root (the root itself not included) → its `Entry`, as the tree is now.
    public func snapshot() -> [String: Entry] {
        lock.withLock { Self.entries(inodes, root: root) }
    }

    /// What `snapshot()` would return after a `crash()` now, without crashing.
    public func durableSnapshot() -> [String: Entry] {
        lock.withLock {
            let (nodes, r) = Self.rebuilt(durable, root: durableRoot)
            return Self.entries(nodes, root: r)
        }
    }

    private static func entries(_ nodes: [UInt64: Inode], root: UInt64?) -> [String: Entry] {
        var out: [String: Entry] = [:]
        func walk(_ dir: UInt64, _ path: String) {
            for (name, child) in nodes[dir]!.entries {
                let p = RelativePath.join(path, name)
                let m = metadata(child, in: nodes)
                out[p] = Entry(kind: m.kind, mode: m.mode, content: m.kind == .file ? nodes[child]!.content : nil,
                               symlinkTarget: m.symlinkTarget, links: m.nlink)
                if m.kind == .directory { walk(child, p) }
            }
        }
        if let root { walk(root, "") }
        return out
    }

    // MARK: reading (FileSystem)

    public func metadata(_ path: String) throws -> FileMetadata? {
        try lock.withLock {
            try refuseIfCrashed(path, "lstat")
            if path.isEmpty { return root.map { Self.metadata($0, in: inodes) } }
            let at: (dir: UInt64, name: String)
            do { at = try resolve(path, "lstat", creatingParents: false) } catch let e as FileSystemError
                where e.errno == ENOENT || e.errno == ENOTDIR {
                return nil   // like POSIXFileSystem: nothing is at `path` inside the folder
            }
            return try lookup(at, path, "lstat").map { Self.metadata($0, in: inodes) }
        }
    }

    public func list(_ directory: String) throws -> [String] {
        try lock.withLock {
            try refuseIfCrashed(directory, "opendir")
            let dir: UInt64
            if directory.isEmpty {
                guard let root else { throw Self.error("", "open folder root", ENOENT) }
                dir = root
            } else {
                let at = try resolve(directory, "opendir", creatingParents: false)
                guard let d = try lookup(at, directory, "opendir") else { throw Self.error(directory, "opendir", ENOENT) }
                guard inodes[d]!.kind == .directory else { throw Self.error(directory, "opendir", ENOTDIR) }
                dir = d
            }
            return inodes[dir]!.entries.keys.sorted()
        }
    }

    public func openForReading(_ path: String) throws -> any FileReader {
        try lock.withLock {
            try refuseIfCrashed(path, "open")
            let ino = try existingFile(path, "open")
            return Reader(fs: self, path: path, content: inodes[ino]!.content, metadata: Self.metadata(ino, in: inodes))
        }
    }

    /// `count` bytes at `offset` of the regular file at `path`, or nil (missing, shorter, a
    /// symlink, a directory, crashed…), like `POSIXFileSystem.read`.
    public func read(_ path: String, offset: Int64, count: Int) -> [UInt8]? {
        lock.withLock {
            guard !isCrashed, offset >= 0, count >= 0, let ino = try? existingFile(path, "open") else { return nil }
            let content = inodes[ino]!.content
            if count == 0 { return [] }   // pread of nothing reads nothing, past the end too
            guard offset <= Int64(content.count) - Int64(count) else { return nil }
            return Array(content[Int(offset)..<Int(offset) + count])
        }
    }

    /// The regular file at `path` (caller holds the lock): ENOENT missing, ELOOP a symlink
    /// (O_NOFOLLOW), EINVAL anything else (POSIXFileSystem's "not a regular file").
    private func existingFile(_ path: String, _ op: String) throws -> UInt64 {
        let at = try resolve(path, op, creatingParents: false)
        guard let ino = try lookup(at, path, op) else { throw Self.error(path, op, ENOENT) }
        switch inodes[ino]!.kind {
        case .file: return ino
        case .symlink: throw Self.error(path, op, ELOOP)
        case .directory: throw FileSystemError(path: path, operation: op, errno: EINVAL, message: "not a regular file")
        }
    }

    fileprivate func current(_ path: String) -> FileMetadata? {
        try? metadata(path)
    }

    // MARK: writing (WritableFileSystem)

    public func makeDirectory(_ path: String, mode: UInt32) throws {
        try perform(.makeDirectory(path, mode: mode)) {
            let at = try resolve(path, "mkdir", creatingParents: true)
            if try lookup(at, path, "mkdir") != nil { throw Self.error(path, "mkdir", EEXIST) }
            tick()
            attach(at.dir, at.name, allocate(Inode(kind: .directory, mode: mode & 0o1777 & ~umask, mtimeNs: clock, ctimeNs: clock)))
        }
    }

    public func createFile(_ path: String, mode: UInt32) throws -> any FileWriter {
        try perform(.createFile(path, mode: mode)) {
            let at = try resolve(path, "create", creatingParents: true)
            if try lookup(at, path, "create") != nil { throw Self.error(path, "create", EEXIST) }
            tick()
            let ino = allocate(Inode(kind: .file, mode: mode & 0o7777 & ~umask, mtimeNs: clock, ctimeNs: clock))
            attach(at.dir, at.name, ino)
            return Writer(fs: self, inode: ino, path: path, generation: generation)
        }
    }

    public func rename(_ from: String, to: String, replacing: Bool) throws {
        try perform(.rename(from, to: to, replacing: replacing)) {
            let source = try resolve(from, "rename", creatingParents: false)
            let target = try resolve(to, "rename", creatingParents: true)
            guard let moving = try lookup(source, from, "rename") else { throw Self.error(to, "rename", ENOENT) }
            let replaced = try lookup(target, to, "rename")
            if replaced != nil && !replacing { throw Self.error(to, "rename", EEXIST) }
            if from != to && RelativePath.isWithin(to, from) { throw Self.error(to, "rename", EINVAL) }   // into itself
            if from != to && RelativePath.isWithin(from, to) { throw Self.error(to, "rename", ENOTEMPTY) } // onto its ancestor
            if let replaced {
                if replaced == moving { return }   // two names of one inode: rename(2) does nothing
                let movingIsDirectory = inodes[moving]!.kind == .directory
                let replacedIsDirectory = inodes[replaced]!.kind == .directory
                if movingIsDirectory && !replacedIsDirectory { throw Self.error(to, "rename", ENOTDIR) }
                if !movingIsDirectory && replacedIsDirectory { throw Self.error(to, "rename", EISDIR) }
                if replacedIsDirectory && !inodes[replaced]!.entries.isEmpty { throw Self.error(to, "rename", ENOTEMPTY) }
            }
            tick()
            if replaced != nil { detach(target.dir, target.name) }
            inodes[source.dir]!.entries[source.name] = nil
            touch(source.dir)
            inodes[target.dir]!.entries[target.name] = moving
            touch(target.dir)
            inodes[moving]!.ctimeNs = clock
        }
    }

    public func link(_ existing: String, to new: String) throws {
        try perform(.link(existing, to: new)) {
            let source = try resolve(existing, "link", creatingParents: false)
            let target = try resolve(new, "link", creatingParents: true)
            guard let ino = try lookup(source, existing, "link") else { throw Self.error(new, "link", ENOENT) }
            if try lookup(target, new, "link") != nil { throw Self.error(new, "link", EEXIST) }
            if inodes[ino]!.kind == .directory { throw Self.error(new, "link", EPERM) }
            tick()
            attach(target.dir, target.name, ino)   // a symlink is linked itself (linkat without AT_SYMLINK_FOLLOW)
            inodes[ino]!.ctimeNs = clock
        }
    }

    public func remove(_ path: String) throws {
        try perform(.remove(path)) {
            let at = try resolve(path, "remove", creatingParents: false)
            guard let ino = try lookup(at, path, "lstat") else { throw Self.error(path, "lstat", ENOENT) }
            if inodes[ino]!.kind == .directory && !inodes[ino]!.entries.isEmpty { throw Self.error(path, "remove", ENOTEMPTY) }
            tick()
            detach(at.dir, at.name)
        }
    }

    public func setMode(_ path: String, _ mode: UInt32) throws {
        try perform(.setMode(path, mode)) {
            let at = try resolve(path, "chmod", creatingParents: false)
            guard let ino = try lookup(at, path, "chmod") else { throw Self.error(path, "chmod", ENOENT) }
            if inodes[ino]!.kind == .symlink { throw Self.error(path, "chmod", EOPNOTSUPP) }
            tick()
            inodes[ino]!.mode = mode & 0o7777
            inodes[ino]!.ctimeNs = clock
        }
    }

    public func setOwner(_ path: String, uid: UInt32?, gid: UInt32?) throws {
        try perform(.setOwner(path, uid: uid, gid: gid)) {
            let at = try resolve(path, "chown", creatingParents: false)
            guard let ino = try lookup(at, path, "chown") else { throw Self.error(path, "chown", ENOENT) }
            tick()
            if let uid { inodes[ino]!.uid = uid }
            if let gid { inodes[ino]!.gid = gid }
            inodes[ino]!.ctimeNs = clock
        }
    }

    /// The owner and group of what is at `path` (not followed), nil when nothing is there.
    public func owner(of path: String) -> (uid: UInt32, gid: UInt32)? {
        lock.withLock {
            if path.isEmpty { return root.map { (inodes[$0]!.uid, inodes[$0]!.gid) } }
            guard let at = try? resolve(path, "lstat", creatingParents: false), let ino = (try? lookup(at, path, "lstat")) ?? nil else { return nil }
            return (inodes[ino]!.uid, inodes[ino]!.gid)
        }
    }

    public func setModificationTime(_ path: String, _ ns: Int64) throws {
        try perform(.setModificationTime(path, ns)) {
            let at = try resolve(path, "utimes", creatingParents: false)
            guard let ino = try lookup(at, path, "utimes") else { throw Self.error(path, "utimes", ENOENT) }
            tick()
            inodes[ino]!.mtimeNs = ns   // a symlink's own time
            inodes[ino]!.ctimeNs = clock
        }
    }

    public func makeSymlink(_ path: String, target: String) throws {
        try perform(.makeSymlink(path, target: target)) {
            guard let bytes = RelativePath.bytes(target), !bytes.contains(0) else {
                throw FileSystemError(path: path, operation: "symlink", errno: EINVAL, message: "link target is not a name")
            }
            let at = try resolve(path, "symlink", creatingParents: true)
            if bytes.isEmpty { throw Self.error(path, "symlink", ENOENT) }   // symlink(2) refuses an empty target
            if try lookup(at, path, "symlink") != nil { throw Self.error(path, "symlink", EEXIST) }
            tick()
            attach(at.dir, at.name, allocate(Inode(kind: .symlink, mode: 0o777, mtimeNs: clock, ctimeNs: clock, target: target)))
        }
    }

    /// fsync: the file's content and metadata, or the directory's entries and metadata, become
    /// durable; "" makes everything durable (syncfs). A symlink is ELOOP (O_NOFOLLOW).
    public func synchronize(_ path: String) throws {
        try perform(.synchronize(path)) {
            if path.isEmpty {
                guard root != nil else { throw Self.error("", "open folder root", ENOENT) }
                durable = inodes
                durableRoot = root
                return
            }
            let at = try resolve(path, "open", creatingParents: false)
            guard let ino = try lookup(at, path, "open") else { throw Self.error(path, "open", ENOENT) }
            if inodes[ino]!.kind == .symlink { throw Self.error(path, "open", ELOOP) }
            durable[ino] = inodes[ino]
        }
    }

    // MARK: resolution (the caller holds the lock)

    /// `path`'s parent directory and last name, walked like `POSIXFileSystem.resolve`: no
    /// component followed (a symlink or a file is ENOTDIR), malformed paths EINVAL, missing
    /// parents ENOENT or made (0777 less the umask).
    private func resolve(_ path: String, _ op: String, creatingParents: Bool) throws -> (dir: UInt64, name: String) {
        guard let bytes = RelativePath.bytes(path), !bytes.isEmpty, !bytes.contains(0) else {
            throw FileSystemError(path: path, operation: "resolve", errno: EINVAL, message: "not a path inside the folder")
        }
        let components = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        for c in components where c.isEmpty || c == "." || c == ".." {
            throw FileSystemError(path: path, operation: "resolve", errno: EINVAL, message: "'.', '..' or empty component")
        }
        guard var dir = root else { throw Self.error("", "open folder root", ENOENT) }
        for name in components.dropLast() {
            if let child = try lookup((dir, name), path, "resolve") {
                guard inodes[child]!.kind == .directory else { throw Self.error(path, "resolve", ENOTDIR) }
                dir = child
            } else if creatingParents {
                tick()
                let child = allocate(Inode(kind: .directory, mode: 0o777 & ~umask, mtimeNs: clock, ctimeNs: clock))
                attach(dir, name, child)
                dir = child
            } else {
                throw Self.error(path, "resolve", ENOENT)
            }
        }
        return (dir, components.last!)
    }

    /// The inode named `at.name` in directory `at.dir`, nil when none; ENAMETOOLONG past 255 bytes.
    private func lookup(_ at: (dir: UInt64, name: String), _ path: String, _ op: String) throws -> UInt64? {
        if (RelativePath.bytes(at.name)?.count ?? 0) > 255 { throw Self.error(path, op, ENAMETOOLONG) }
        return inodes[at.dir]!.entries[at.name]
    }

    private func refuseIfCrashed(_ path: String, _ op: String) throws {
        if isCrashed { throw Self.error(path, op, EIO) }
    }

    // MARK: changing the tree (the caller holds the lock)

    private func tick() { clock += 1000 }

    /// A new inode, without a name yet; it is durable as made (`Inode.asMade`).
    private func allocate(_ node: Inode) -> UInt64 {
        nextInode += 1
        inodes[nextInode] = node
        durable[nextInode] = node.asMade
        return nextInode
    }

    /// One more name: `name` in `dir` for `ino`.
    private func attach(_ dir: UInt64, _ name: String, _ ino: UInt64) {
        inodes[dir]!.entries[name] = ino
        if inodes[ino]!.kind != .directory { inodes[ino]!.nlink += 1 }
        touch(dir)
    }

    /// Removes `name` from `dir`, and everything below it; an inode without names is forgotten
    /// (its durable state stays until a crash or a root synchronize shows it unreachable).
    private func detach(_ dir: UInt64, _ name: String) {
        guard let ino = inodes[dir]!.entries.removeValue(forKey: name) else { return }
        touch(dir)
        if inodes[ino]!.kind == .directory {
            for child in inodes[ino]!.entries.keys { detach(ino, child) }
            inodes[ino] = nil
        } else {
            inodes[ino]!.nlink -= 1
            inodes[ino]!.ctimeNs = clock
            if inodes[ino]!.nlink == 0 { inodes[ino] = nil }
        }
    }

    private func touch(_ dir: UInt64) {
        inodes[dir]!.mtimeNs = clock
        inodes[dir]!.ctimeNs = clock
    }

    private static func metadata(_ ino: UInt64, in nodes: [UInt64: Inode]) -> FileMetadata {
        let n = nodes[ino]!
        switch n.kind {
        case .file:
            return FileMetadata(kind: .file, size: Int64(n.content.count), mode: n.mode, mtimeNs: n.mtimeNs, ctimeNs: n.ctimeNs,
                                inode: ino, nlink: n.nlink)
        case .directory:
            let subdirectories = n.entries.values.filter { nodes[$0]?.kind == .directory }.count
            return FileMetadata(kind: .directory, size: 0, mode: n.mode, mtimeNs: n.mtimeNs, ctimeNs: n.ctimeNs,
                                inode: ino, nlink: UInt32(2 + subdirectories))
        case .symlink:
            return FileMetadata(kind: .symlink, size: Int64(RelativePath.bytes(n.target ?? "")?.count ?? 0), mode: n.mode,
                                mtimeNs: n.mtimeNs, ctimeNs: n.ctimeNs, inode: ino, nlink: n.nlink, symlinkTarget: n.target)
        }
    }

    static func error(_ path: String, _ op: String, _ code: Int32) -> FileSystemError {
        FileSystemError(path: path, operation: op, errno: code, message: String(cString: strerror(code)))
    }

    // MARK: test helpers (the world changing the folder)

    /// Writes `content` in place (the inode stays, like `>`): every name of the file sees it.
    /// Anything else at `path` is replaced by a new file; missing parents are made.
    public func write(_ path: String, _ content: [UInt8], mode: UInt32 = 0o644) {
        lock.withLock {
            let dir = helperParent(path)
            let name = Self.lastName(path)
            tick()
            if let ino = inodes[dir]!.entries[name], inodes[ino]!.kind == .file {
                inodes[ino]!.content = content
                inodes[ino]!.mode = mode
                inodes[ino]!.mtimeNs = clock
                inodes[ino]!.ctimeNs = clock
                return
            }
            detach(dir, name)
            attach(dir, name, allocate(Inode(kind: .file, mode: mode, mtimeNs: clock, ctimeNs: clock, content: content)))
        }
    }

    /// `ln existing new`: one more name for a regular file (nothing happens for anything else, or
    /// when `new` exists).
    public func link(_ existing: String, _ new: String) {
        lock.withLock {
            guard let ino = helperLookup(existing), inodes[ino]!.kind == .file, helperLookup(new) == nil else { return }
            let dir = helperParent(new)
            tick()
            attach(dir, Self.lastName(new), ino)
            inodes[ino]!.ctimeNs = clock
        }
    }

    /// `mkdir -p`; nothing happens when something is at `path` already. `mkdir("")` brings back
    /// a deleted folder root.
    public func mkdir(_ path: String, mode: UInt32 = 0o755) {
        lock.withLock {
            if path.isEmpty { _ = helperRoot(); return }
            let dir = helperParent(path)
            let name = Self.lastName(path)
            guard inodes[dir]!.entries[name] == nil else { return }
            tick()
            attach(dir, name, allocate(Inode(kind: .directory, mode: mode, mtimeNs: clock, ctimeNs: clock)))
        }
    }

    /// A symlink at `path`, replacing anything there. `target` is path text too (a link's target
    /// is bytes like a name).
    public func symlink(_ path: String, target: String) {
        precondition(RelativePath.isText(target), "not path text: \(target)")
        lock.withLock {
            let dir = helperParent(path)
            let name = Self.lastName(path)
            tick()
            detach(dir, name)
            attach(dir, name, allocate(Inode(kind: .symlink, mode: 0o777, mtimeNs: clock, ctimeNs: clock, target: target)))
        }
    }

    /// chmod of anything, a symlink too (nothing happens when `path` is missing).
    public func chmod(_ path: String, _ mode: UInt32) {
        lock.withLock {
            guard let ino = helperLookup(path) else { return }
            tick()
            inodes[ino]!.mode = mode
            inodes[ino]!.ctimeNs = clock
        }
    }

    /// `rm -rf`: removes a path and everything below it; "" removes the folder root itself.
    public func delete(_ path: String) {
        lock.withLock {
            if path.isEmpty { root = nil; inodes = [:]; return }
            guard helperLookup(path) != nil else { return }
            tick()
            detach(helperParent(path), Self.lastName(path))
        }
    }

    /// `mv from to`, replacing whatever is at `to` (missing parents made; nothing happens when
    /// `from` is missing).
    public func rename(_ from: String, _ to: String) {
        precondition(from == to || !(RelativePath.isWithin(to, from) || RelativePath.isWithin(from, to)), "\(from) -> \(to)")
        lock.withLock {
            guard from != to, let ino = helperLookup(from) else { return }
            let target = helperParent(to)
            let name = Self.lastName(to)
            if inodes[target]!.entries[name] == ino { return }   // two names of one file: mv does nothing
            tick()
            let source = helperParent(from)
            inodes[source]!.entries[Self.lastName(from)] = nil
            touch(source)
            detach(target, name)
            inodes[target]!.entries[name] = ino
            touch(target)
            inodes[ino]!.ctimeNs = clock
        }
    }

    private static func lastName(_ path: String) -> String {
        String(path.split(separator: "/", omittingEmptySubsequences: false).last!)
    }

    private func helperRoot() -> UInt64 {
        if let root { return root }
        tick()
        let r = allocate(Inode(kind: .directory, mode: 0o755, mtimeNs: clock, ctimeNs: clock))
        root = r
        return r
    }

    /// The directory that holds `path`, made with any missing parents (mode 0755). A test that
    /// puts something below a file or a symlink has a bug: that stops it.
    private func helperParent(_ path: String) -> UInt64 {
        precondition(RelativePath.validate(path) == nil || RelativePath.validate(path) == .stateDirectory, "not a path: \(path)")
        var dir = helperRoot()
        for name in path.split(separator: "/").dropLast().map(String.init) {
            if let child = inodes[dir]!.entries[name] {
                precondition(inodes[child]!.kind == .directory, "\(path): \(name) is not a directory")
                dir = child
            } else {
                tick()
                let child = allocate(Inode(kind: .directory, mode: 0o755, mtimeNs: clock, ctimeNs: clock))
                attach(dir, name, child)
                dir = child
            }
        }
        return dir
    }

    /// The inode at `path`, nil when anything on the way is missing or not a directory.
    private func helperLookup(_ path: String) -> UInt64? {
        guard var ino = root else { return nil }
        if path.isEmpty { return ino }
        for name in path.split(separator: "/", omittingEmptySubsequences: false).map(String.init) {
            guard inodes[ino]!.kind == .directory, let child = inodes[ino]!.entries[name] else { return nil }
            ino = child
        }
        return ino
    }

    // MARK: open files

    /// Reads see the content as it was at open (like an unlinked-and-replaced file); fstat sees
    /// the current metadata of the path, which is how a scanner notices a file that changed while hashed.
    private final class Reader: FileReader {
        let fs: FakeFileSystem
        let path: String
        let content: [UInt8]
        let opened: FileMetadata
        var offset = 0

        init(fs: FakeFileSystem, path: String, content: [UInt8], metadata: FileMetadata) {
            self.fs = fs; self.path = path; self.content = content; self.opened = metadata
        }

        func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
            let n = min(buffer.count, content.count - offset)
            if n > 0 {
                content.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + offset, byteCount: n) }
                offset += n
            }
            fs.onRead?(path)
            return n
        }

        func metadata() throws -> FileMetadata { fs.current(path) ?? opened }
        func close() {}
    }

    /// A file open for writing: changes its inode whatever names it has now (an unlinked file's
    /// writes go nowhere). Every call but `startWriteBack` and `close` is an `Operation`.
    /// EBADF once closed, or after a crash.
    private final class Writer: FileWriter {
        let fs: FakeFileSystem
        let inode: UInt64
        let path: String
        let generation: Int
        var closed = false   // under fs.lock

        init(fs: FakeFileSystem, inode: UInt64, path: String, generation: Int) {
            self.fs = fs; self.inode = inode; self.path = path; self.generation = generation
        }

        /// Runs `body` on the file's inode, if it still has one (under fs.lock).
        private func change(_ op: Operation, _ name: String, _ body: (inout Inode, Int64) throws -> Void) throws {
            try fs.perform(op) {
                if closed || generation != fs.generation { throw FakeFileSystem.error(path, name, EBADF) }
                guard fs.inodes[inode] != nil else { return }
                fs.tick()
                try body(&fs.inodes[inode]!, fs.clock)
            }
        }

        func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws {
            let data = Array(bytes)
            try change(.write(path, offset: offset, count: data.count), "write") { node, now in
                guard offset >= 0 else { throw FakeFileSystem.error(path, "write", EINVAL) }
                let end = Int(offset) + data.count
                if node.content.count < end { node.content += [UInt8](repeating: 0, count: end - node.content.count) }
                node.content.replaceSubrange(Int(offset)..<end, with: data)
                node.mtimeNs = now
                node.ctimeNs = now
            }
        }

        func truncate(_ size: Int64) throws {
            try change(.truncate(path, size: size), "truncate") { node, now in
                guard size >= 0 else { throw FakeFileSystem.error(path, "truncate", EINVAL) }
                if node.content.count > Int(size) {
                    node.content.removeSubrange(Int(size)...)
                } else {
                    node.content += [UInt8](repeating: 0, count: Int(size) - node.content.count)
                }
                node.mtimeNs = now
                node.ctimeNs = now
            }
        }

        func setMode(_ mode: UInt32) throws {
            try change(.setFileMode(path, mode), "chmod") { node, now in
                node.mode = mode & 0o7777
                node.ctimeNs = now
            }
        }

        func setModificationTime(_ ns: Int64) throws {
            try change(.setFileModificationTime(path, ns), "utimes") { node, now in
                node.mtimeNs = ns
                node.ctimeNs = now
            }
        }

        func startWriteBack(offset: Int64, count: Int64) {}

        /// fsync: the file's content, size, mode and times become durable.
        func synchronize() throws {
            try fs.perform(.synchronizeFile(path)) {
                if closed || generation != fs.generation { throw FakeFileSystem.error(path, "fsync", EBADF) }
                if let node = fs.inodes[inode] { fs.durable[inode] = node }
            }
        }

        func close() {
            fs.lock.withLock { closed = true }
        }
    }
}
