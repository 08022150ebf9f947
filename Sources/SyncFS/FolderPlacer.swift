import Glibc
import SyncCore
import SyncReplication

/// Puts a planned batch (`BatchPlan`) in place in one pass, every operation through a
/// `WritableFileSystem` (confined to the folder, never following a symlink): directories first
/// (shallow to deep, owner-writable while their contents arrive), then files, symlinks and
/// conflict copies, deletions (deep to shallow, into the trash), and last the directories' own
/// modes (deep to shallow), so a read-only directory is read-only only once it is filled.
///
/// Nothing is lost: an edit on disk no scan has seen yet is kept as a conflict copy first; our
/// losing version of a conflict is renamed aside (or to the trash for a conflict copy); a conflict
/// copy never replaces another file; deletions and objects of another kind go to the trash.
/// A path that cannot be placed is reported in `failed` and never stops the others.
///
/// Used by the daemon (SyncDaemon.FolderApplier) and by the replication simulator, so the
/// simulator runs the placement code the daemon runs.
public struct FolderPlacer {
    /// One change, with the staged file (a path under `.syncd/tmp/`) where content is needed.
    public enum Step: Hashable, Sendable {
        case directory(FileEntry)
        case file(FileEntry, staged: String)
        case symlink(FileEntry)
        case delete(FileEntry)
        /// The remote version lost a conflict: keep its content beside ours.
        case conflictCopy(FileEntry, staged: String, name: String)
        /// The remote version of a symlink lost a conflict: keep the link beside ours.
        case conflictLink(FileEntry, name: String)

        /// The path the step writes.
        public var path: String {
            switch self {
            case .directory(let e), .file(let e, _), .symlink(let e), .delete(let e), .conflictCopy(let e, _, _), .conflictLink(let e, _): e.path
            }
        }

        /// The step for a planned one, with its staged file ("" until staged).
        public init(_ step: BatchPlan.Step) {
            switch step {
            case .directory(let e): self = .directory(e)
            case .file(let e): self = .file(e, staged: "")
            case .symlink(let e): self = .symlink(e)
            case .delete(let e): self = .delete(e)
            case let .conflictCopy(e, name): self = .conflictCopy(e, staged: "", name: name)
            case let .conflictLink(e, name): self = .conflictLink(e, name: name)
            }
        }
    }

    public struct Result {
        public var done: [FileEntry] = []
        /// What each file, symlink or directory of `done` was right after this placer put it
        /// there: recorded in the index (the path may change again before the record is written).
        public var metadata: [String: FileMetadata] = [:]
        public var failed: [(path: String, error: Error)] = []
        /// Unscanned local edits kept as conflict copies.
        public var keptEdits = 0
        /// Flushing the changed directories failed: what is in `done` is in place but may not be
        /// durable — record it, and fail the batch so it is applied (and flushed) again.
        public var flushError: Error?
    }

    public let folder: any WritableFileSystem
    /// The device whose unscanned edits are named in their conflict copies.
    public let me: ShortDeviceID
    /// Conflict copies one file keeps; the oldest go to the trash.
    public let maxConflictCopies: Int
    /// What the index holds for a path (metadata as last scanned, deleted or not).
    public let indexed: (String) throws -> (metadata: FileMetadata, deleted: Bool)?
    /// `.syncd/trash/<UTC time>`: where this moment's deletions and displaced objects go.
    public let trashDirectory: () -> String
    /// A fresh name under `.syncd/tmp/` for a symlink made before it is renamed into place.
    public let temporaryName: () -> String
    /// Makes everything durable at once (`syncfs`); used for batches of many files.
    public let flush: () throws -> Void
    public let log: (String) -> Void
    /// Owner and modes of what is placed (`PlacementPolicy.none`: the writer's modes, our user).
    public let policy: PlacementPolicy
    /// Paths this placer put in place (conflict copies included): never capped away by the same batch.
    private let placedNow = PathSet()

    final class PathSet {
        var paths: Set<String> = []
        /// The trash directory of the batch being placed (copies capped away go there too).
        var trash: String?
    }

    public init(folder: any WritableFileSystem, me: ShortDeviceID, maxConflictCopies: Int,
                indexed: @escaping (String) throws -> (metadata: FileMetadata, deleted: Bool)?,
                trashDirectory: @escaping () -> String, temporaryName: @escaping () -> String,
                flush: @escaping () throws -> Void, log: @escaping (String) -> Void = { _ in },
                policy: PlacementPolicy = .none) {
        self.policy = policy
        self.folder = folder; self.me = me; self.maxConflictCopies = max(1, maxConflictCopies); self.indexed = indexed
        self.trashDirectory = trashDirectory; self.temporaryName = temporaryName; self.flush = flush; self.log = log
    }

    /// Batches of up to this many files are made durable file by file (fsync as each is staged,
    /// then the directories that changed); bigger ones with one `flush` before and after placing.
    public static let perFileSyncLimit = 32

    public static func syncsEachFile(_ steps: [Step]) -> Bool {
        steps.lazy.filter { if case .directory = $0 { false } else { true } }.count <= perFileSyncLimit
    }

    /// Places `steps`. `conflictsLocal`: path → where our losing version goes (a copy name, or
    /// `BatchPlan.toTrash`). `renames`: files of the batch that are renames of a local file the
    /// batch deletes (target → that file's entry), staged as a hard link.
    public func place(_ steps: [Step], conflictsLocal: [String: String], renames: [String: FileEntry] = [:],
                      syncEach: Bool) throws -> Result {
        var result = Result()
        var failedPaths: Set<String> = []
        func depth(_ p: String) -> Int { p.utf8.reduce(0) { $0 + ($1 == UInt8(ascii: "/") ? 1 : 0) } }
        let trash = trashDirectory()
        placedNow.trash = trash
        defer { placedNow.trash = nil }
        func attempt(_ path: String, _ body: () throws -> Void) {
            do { try body() } catch {
                result.failed.append((path, error))
                failedPaths.insert(path)
            }
        }
        func keepEdit(_ path: String, orTrashTo trash: String? = nil) throws -> Bool {
            let kept = try keepUnindexedEdit(path, orTrashTo: trash)
            if kept { result.keptEdits += 1 }
            return kept
        }
        /// Our losing version (or an unscanned edit) is kept before `path` is replaced.
        func setAside(_ path: String) throws {
            let unindexed = try keepEdit(path)
            if !unindexed, let name = conflictsLocal[path], try folder.metadata(path) != nil {
                if name == BatchPlan.toTrash { try moveToTrash(path, trash) } else { try renameWithoutReplacing(path, to: name) }
            }
        }
        let dirs = steps.compactMap { if case .directory(let e) = $0 { e } else { nil } }.sorted { depth($0.path) < depth($1.path) }
        for e in dirs {
            attempt(e.path) {
                switch try folder.metadata(e.path)?.kind {
                case .directory?: break
                case nil:
                    try folder.makeDirectory(e.path, mode: 0o700)
                    try own(e.path)
                case .file?, .symlink?:
                    try displace(e.path, trash: trash)
                    try folder.makeDirectory(e.path, mode: 0o700)
                    try own(e.path)
                }
            }
        }
        for step in steps {
            switch step {
            case let .file(e, staged):
                attempt(e.path) {
                    try setAside(e.path)
                    if try folder.metadata(e.path)?.kind == .directory { try displace(e.path, trash: trash) }
                    try prepareStaged(staged, e)
                    try folder.rename(staged, to: e.path, replacing: true)
                    placedNow.paths.insert(e.path)
                    result.metadata[e.path] = try folder.metadata(e.path)
                    result.done.append(e)
                }
            case let .conflictCopy(e, staged, name):
                attempt(e.path) {
                    // The same conflict resolved again (the losing version came from a second
                    // peer): its copy is already here, so no "name 2".
                    if try sameContent(staged, name) { try folder.remove(staged); return }
                    try prepareStaged(staged, e)
                    try renameWithoutReplacing(staged, to: name)
                }
            case let .conflictLink(e, name):
                attempt(e.path) {
                    if let there = try folder.metadata(name), there.kind == .symlink, there.symlinkTarget == e.metadata.symlinkTarget { return }
                    let link = try makeLink(e)
                    try own(link)
                    try renameWithoutReplacing(link, to: name)
                }
            case .symlink(let e):
                attempt(e.path) {
                    try setAside(e.path)
                    let link = try makeLink(e)
                    try own(link)
                    if try folder.metadata(e.path)?.kind == .directory { try displace(e.path, trash: trash) }
                    try folder.rename(link, to: e.path, replacing: true)
                    placedNow.paths.insert(e.path)
                    result.metadata[e.path] = try folder.metadata(e.path)
                    result.done.append(e)
                }
            case .directory, .delete:
                break
            }
        }
        let deletions = steps.compactMap { if case .delete(let e) = $0 { e } else { nil } }.sorted { depth($0.path) > depth($1.path) }
        let movedAway = Dictionary(renames.map { ($0.value.path, $0.key) }, uniquingKeysWith: { a, _ in a })
        for e in deletions {
            attempt(e.path) {
                guard let disk = try folder.metadata(e.path) else { result.done.append(e); return }
                if let newName = movedAway[e.path], let moved = try folder.metadata(newName), moved.kind == .file,
                   disk.kind == .file, moved.inode == disk.inode {
                    // Renamed: the content lives on under its new name (one inode), nothing to trash.
                    try folder.remove(e.path)
                } else if disk.kind == .directory {
                    do { try folder.remove(e.path) } catch let error as FileSystemError where error.errno == ENOTEMPTY || error.errno == EEXIST {
                        return   // something unknown is inside: keep it (and the directory)
                    }
                } else {
                    _ = try keepEdit(e.path, orTrashTo: trash)
                }
                result.done.append(e)
            }
        }
        for e in dirs.reversed() where !failedPaths.contains(e.path) {
            attempt(e.path) {
                try folder.setMode(e.path, policy.directoryMode(for: e.metadata.mode))
                result.metadata[e.path] = try folder.metadata(e.path)
                result.done.append(e)
            }
        }
        if syncEach {
            // The directories whose entries changed — where things were placed, kept aside, and
            // moved to in the trash — and every directory above them, up to the folder: a
            // directory this batch made (the trash's, say) is durable only once its parent is.
            var touched: Set<String> = [trash]
            for step in steps {
                switch step {
                case .directory(let e), .file(let e, _), .symlink(let e), .delete(let e):
                    touched.insert(RelativePath.parent(of: e.path))
                    let parent = RelativePath.parent(of: e.path)
                    if !parent.isEmpty { touched.insert(RelativePath.join(trash, parent)) }
                case .conflictCopy(_, _, let name), .conflictLink(_, let name): touched.insert(RelativePath.parent(of: name))
                }
            }
            for e in conflictsLocal.values where e != BatchPlan.toTrash { touched.insert(RelativePath.parent(of: e)) }
            for dir in touched { var d = dir; while !d.isEmpty { d = RelativePath.parent(of: d); touched.insert(d) } }
            // Deepest first, so each parent is flushed after what it holds; a directory a failed
            // path never made (or a symlink there) is skipped, any other failure is `flushError`.
            // A directory we may not open (a peer's mode without owner read) is left to the next flush.
            for dir in touched.sorted(by: { ($0.utf8.count, $0) > ($1.utf8.count, $1) }) {
                do { try folder.synchronize(dir) } catch let error as FileSystemError where [ENOENT, ENOTDIR, ELOOP, EACCES, EPERM].contains(error.errno) {
                    continue
                } catch {
                    result.flushError = error
                    break
                }
            }
        } else {
            do { try flush() } catch { result.flushError = error }
        }
        return result
    }

    /// The policy's owner and mode on a staged file, before it is renamed into place (chown
    /// first: it clears setuid and setgid bits, which the mode then sets again).
    func prepareStaged(_ staged: String, _ e: FileEntry) throws {
        try own(staged)
        if policy.fileMode != nil || policy.changesOwner { try folder.setMode(staged, policy.fileMode(for: e.metadata.mode)) }
    }

    /// The policy's owner and group on `path` (nothing without one).
    func own(_ path: String) throws {
        guard policy.changesOwner else { return }
        try folder.setOwner(path, uid: policy.uid, gid: policy.gid)
    }

    /// Moves whatever is at `path` — a directory with everything under it, a file, a symlink — to
    /// the trash, so an object of another kind can take its place; an unscanned edit is kept as a
    /// conflict copy instead.
    func displace(_ path: String, trash: String) throws {
        guard let disk = try folder.metadata(path) else { return }
        if disk.kind == .directory {
            try moveToTrash(path, trash)
        } else {
            try keepUnindexedEdit(path, orTrashTo: trash)
        }
        log("\(RelativePath.display(path)) changes kind (was a \(disk.kind)): the old one is in the trash")
    }

    /// Whether `other` is a regular file with the same bytes as the regular file `path`.
    func sameContent(_ path: String, _ other: String) throws -> Bool {
        guard let a = try folder.metadata(path), let b = try folder.metadata(other), a.kind == .file, b.kind == .file,
              a.size == b.size else { return false }
        let ra = try folder.openForReading(path), rb = try folder.openForReading(other)
        defer { ra.close(); rb.close() }
        var x = [UInt8](repeating: 0, count: 1 << 16), y = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = try x.withUnsafeMutableBytes { try ra.read(into: $0) }
            var m = 0
            while m < n {
                let k = try y.withUnsafeMutableBytes { try rb.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[m..<n])) }
                if k == 0 { return false }
                m += k
            }
            if n == 0 { return try y.withUnsafeMutableBytes { try rb.read(into: $0) } == 0 }
            if x[..<n] != y[..<n] { return false }
        }
    }

    /// `e`'s symlink, made under `.syncd/tmp/` (never followed), ready to be renamed into place.
    func makeLink(_ e: FileEntry) throws -> String {
        let temp = temporaryName()
        try folder.makeSymlink(temp, target: e.metadata.symlinkTarget ?? "")
        return temp
    }

    /// Before replacing or deleting a path: if the file on disk is not what the index says (an
    /// edit not scanned yet), move it aside as a conflict copy instead of losing it; if it is,
    /// move it to the trash when `trash` is given. Returns true when it moved an unindexed edit aside.
    @discardableResult
    public func keepUnindexedEdit(_ path: String, orTrashTo trash: String? = nil) throws -> Bool {
        guard let disk = try folder.metadata(path) else { return false }
        let known = try indexed(path)
        if let known, !known.deleted, disk.looksUnchanged(from: known.metadata) {
            guard let trash else { return false }
            try moveToTrash(path, trash)
            return false
        }
        if disk.kind == .directory {
            // A directory's contents are indexed path by path: the directory itself is no edit.
            if let trash { try moveToTrash(path, trash) }
            return false
        }
        if ConflictCopyName.original(of: path) != nil {
            // A copy this device made for the same conflict and has not scanned yet (two peers
            // resolving one conflict make the same copy): kept in the trash, never copied again.
            try moveToTrash(path, trash ?? placedNow.trash ?? trashDirectory())
            return true
        }
        var local = FileEntry(path: path, metadata: disk, version: VersionVector(), sequence: 0)
        local.version = VersionVector([.init(device: me, value: 1)])
        let name = ConflictCopyName.make(for: path, loser: local) ?? path
        try renameWithoutReplacing(path, to: name)
        log("kept an unscanned local edit of \(RelativePath.display(path)) as \(RelativePath.display(name))")
        return true
    }

    /// Keeps at most `maxConflictCopies` conflict copies per file: the oldest go to the trash —
    /// by the time in their names, then their " 2", " 3"… suffix — never one this batch placed.
    func capConflictCopies(of name: String) {
        guard let marker = name.range(of: ".sync-conflict-") else { return }
        let stem = String(name[..<marker.lowerBound])
        let dir = RelativePath.parent(of: name)
        let base = String(stem.split(separator: "/").last ?? "")
        let names = ((try? folder.list(dir)) ?? []).filter { $0.hasPrefix(base + ".sync-conflict-") }
        guard names.count >= maxConflictCopies else { return }
        func age(_ n: String) -> (String, Int) {
            let (stem, _) = ConflictCopyName.split(n)
            guard let space = stem.lastIndex(of: " "), let k = Int(stem[stem.index(after: space)...]) else { return (stem, 1) }
            return (String(stem[..<space]), k)
        }
        let oldest = names.sorted { age($0) < age($1) }.filter { !placedNow.paths.contains(RelativePath.join(dir, $0)) }
        let trash = placedNow.trash ?? trashDirectory()
        for old in oldest.prefix(names.count - maxConflictCopies + 1) {
            try? moveToTrash(RelativePath.join(dir, old), trash)
        }
    }

    /// Renames onto `name`, or onto `name` with " 2", " 3"… before the extension when something
    /// else already has that name: a conflict copy never replaces another file.
    @discardableResult
    public func renameWithoutReplacing(_ from: String, to name: String, cappingCopies: Bool = true) throws -> String {
        if cappingCopies { capConflictCopies(of: name) }
        let (stem, ext) = ConflictCopyName.split(String(name.split(separator: "/").last ?? ""))
        var candidate = name
        var n = 1
        while true {
            do {
                try folder.rename(from, to: candidate, replacing: false)
                if cappingCopies { placedNow.paths.insert(candidate) }
                return candidate
            } catch let e as FileSystemError where e.errno == EEXIST && n < 1000 {
                n += 1
                candidate = RelativePath.join(RelativePath.parent(of: name), "\(stem) \(n)\(ext)")
            }
        }
    }

    /// Moves `path` (with everything under it) to the same relative place under `trash`.
    public func moveToTrash(_ path: String, _ trash: String) throws {
        try renameWithoutReplacing(path, to: trash + "/" + path, cappingCopies: false)
    }
}
