import Dispatch
import SyncCore

/// What the index currently says about a path, as far as a scan cares.
public struct IndexedState: Sendable, Equatable {
    public var metadata: FileMetadata
    public var deleted: Bool
    public init(metadata: FileMetadata, deleted: Bool) { self.metadata = metadata; self.deleted = deleted }
}

/// The index as a scan sees it (the daemon adapts the store; tests use a dictionary).
public protocol ScanBaseline {
    func state(of path: String) -> IndexedState?
    /// Paths that are live (not deleted) in the index at or below `directory` ("" = everything).
    func livePaths(under directory: String) -> [String]
    /// Live regular files the index records with inode `inode`: the other names of a hard-linked
    /// file (and, rarely, a file on another mount inside the folder; rescanning it is harmless).
    func liveFiles(withInode inode: UInt64) -> [String]
    /// Live paths in the whole index (every kind).
    func liveCount() -> Int
}

extension ScanBaseline {
    public func liveCount() -> Int { livePaths(under: "").count }
}

/// What a scan does with indexed paths it no longer finds.
public enum MissingPaths: Sendable, Equatable {
    /// Records them as deleted — unless they are most of the index at once
    /// (`Options.massMissingMinimum`, more than half): a replaced or half-restored folder, not a
    /// wish to delete everywhere. Those are set aside instead (`ScanReport.setAside`).
    case deleteUnlessMost
    /// The folder's contents are unknown (its marker was missing, its index rebuilt): records no
    /// deletion at all; every missing path is set aside.
    case setAside
    /// Records them as deleted whatever their number: the user confirmed (`syncd accept-deletions`).
    case delete
}

/// A snapshot of a whole folder's index, for full scans.
/// Its live paths are kept sorted by their UTF-8 bytes, where everything under `dir` is the one
/// contiguous run that starts with `dir/`: a scan of 1,000 paths that a peer's batch just placed
/// looks up 1,000 short runs instead of filtering the whole index 1,000 times.
public struct SnapshotBaseline: ScanBaseline {
    public let states: [String: IndexedState]
    private let live: [String]
    private let byInode: FilesByInode

    public init(_ states: [String: IndexedState]) {
        self.states = states
        live = states.compactMap { $0.value.deleted ? nil : $0.key }.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        byInode = FilesByInode(states)
    }

    public func state(of path: String) -> IndexedState? { states[path] }

    public func liveFiles(withInode inode: UInt64) -> [String] { byInode.paths[inode] ?? [] }

    public func liveCount() -> Int { live.count }

    /// Live files grouped by inode, built on the first question: most scans find no hard-linked
    /// file changed and never pay for it.
    private final class FilesByInode {
        let states: [String: IndexedState]
        lazy var paths: [UInt64: [String]] = states.reduce(into: [:]) { map, s in
            if !s.value.deleted && s.value.metadata.kind == .file { map[s.value.metadata.inode, default: []].append(s.key) }
        }
        init(_ states: [String: IndexedState]) { self.states = states }
    }

    public func livePaths(under directory: String) -> [String] {
        if directory.isEmpty { return live }
        let prefix = Array(directory.utf8) + [UInt8(ascii: "/")]
        var lo = 0, hi = live.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if live[mid].utf8.lexicographicallyPrecedes(prefix) { lo = mid + 1 } else { hi = mid }
        }
        var out: [String] = states[directory].map { $0.deleted ? [] : [directory] } ?? []
        while lo < live.count && live[lo].utf8.starts(with: prefix) { out.append(live[lo]); lo += 1 }
        return out
    }
}

public struct ScanReport: Sendable, Equatable {
    public var changes = 0
    public var hashedFiles = 0
    public var hashedBytes: Int64 = 0
    /// Files that kept changing while being hashed; the caller should scan them again later.
    public var unstable: [String] = []
    public var errors: [String] = []
    /// Indexed paths found missing but not recorded as deleted (`MissingPaths`), children first.
    public var setAside: [String] = []
    /// True when they were set aside because they were most of the index at once.
    public var mostMissing = false
}

public enum ScanError: Error, Equatable, CustomStringConvertible {
    case rootUnavailable(String)
    case cancelled

    public var description: String {
        switch self {
        case .rootUnavailable(let why): return "folder root is not available: \(why)"
        case .cancelled: return "scan cancelled"
        }
    }
}

/// Finds what changed in a folder relative to the index: walks the tree (never following
/// symlinks), skips what `.syncignore` and `.syncd/` exclude, re-reads only files whose
/// (size, mtime, ctime, inode, mode) differ, hashes them on all cores, and hands changes to
/// `emit` in batches (each batch becomes one index transaction).
public final class FolderScanner {
    public struct Options: Sendable {
        /// Changes per emitted batch (one transaction each).
        public var batchSize = 2000
        /// Bytes hashed before a batch is emitted even if it is not full.
        public var batchBytes: Int64 = 256 << 20
        /// Attempts to hash a file that changes while it is read before reporting it unstable.
        public var attempts = 3
        /// Fewer missing paths than this are recorded as deletions even when they are most of the
        /// index (a small folder may shrink); from this many on, more than half is "most".
        public var massMissingMinimum = 10
        public init() {}
    }

    public let fs: any FileSystem
    public let hasher: FileHasher
    public var options: Options

    public init(fs: any FileSystem, hasher: FileHasher, options: Options = Options()) {
        self.fs = fs
        self.hasher = hasher
        self.options = options
    }

    private enum Pending {
        case ready(LocalChange)
        case hash(path: String, metadata: FileMetadata)
    }

    /// Scans `roots` (relative paths; "" is the whole folder), each recursively. A changed file
    /// with several names (st_nlink > 1) brings its other names in the index into the scan.
    public func scan(roots: [String], baseline: any ScanBaseline, ignore: IgnoreRules,
                     missing: MissingPaths = .deleteUnlessMost,
                     isCancelled: () -> Bool = { false },
                     emit: ([LocalChange]) throws -> Void) throws -> ScanReport {
        var report = ScanReport()
        var pending: [Pending] = []
        var pendingBytes: Int64 = 0
        var seen = Set<String>()
        var unreadable: [String] = []

        func flush(with extra: [LocalChange] = []) throws {
            if isCancelled() { throw ScanError.cancelled }
            let batch = hashAll(pending, report: &report) + extra
            pending.removeAll(keepingCapacity: true)
            pendingBytes = 0
            if !batch.isEmpty {
                report.changes += batch.count
                try emit(batch)
            }
        }

        var scanRoots = Self.minimalRoots(roots)

        func consider(_ path: String, _ m: FileMetadata) throws {
            seen.insert(path)
            if let old = baseline.state(of: path), !old.deleted, m.looksUnchanged(from: old.metadata) { return }
            // A file changed in place changed under all its names, but inotify reports only the
            // name written through: the other names join the scan as roots of their own.
            if m.kind == .file && m.nlink > 1 {
                for other in baseline.liveFiles(withInode: m.inode)
                where !seen.contains(other) && !scanRoots.contains(where: { RelativePath.isWithin(other, $0) }) {
                    scanRoots.append(other)
                }
            }
            // A batch is cut before the file that would take it past `batchBytes`, not after: the
            // last file found stays pending, so the removals found after the walk can join it
            // (a renamed big file is one batch).
            if m.kind == .file && !pending.isEmpty && pendingBytes + m.size > options.batchBytes { try flush() }
            if m.kind == .file {
                pending.append(.hash(path: path, metadata: m))
                pendingBytes += m.size
            } else {
                pending.append(.ready(.present(path: path, metadata: m, chunks: [])))
            }
            if pending.count >= options.batchSize { try flush() }
        }

        var next = 0
        while next < scanRoots.count {  // `consider` may add roots
            let root = scanRoots[next]
            next += 1
            if root.isEmpty {
                guard let m = try? fs.metadata(""), m.kind == .directory else {
                    throw ScanError.rootUnavailable("missing or not a directory")
                }
            } else {
                if Self.isStatePath(root) || ignore.isIgnored(root, isDirectory: false) && ignore.isIgnored(root, isDirectory: true) { continue }
                guard let m = try? fs.metadata(root) else { continue }  // gone: found missing below
                if ignore.isIgnored(root, isDirectory: m.kind == .directory) || hasIgnoredAncestor(root, ignore) { continue }
                try consider(root, m)
                if m.kind != .directory { continue }
            }
            var stack = [root]
            while let dir = stack.popLast() {
                let names: [String]
                do { names = try fs.list(dir) } catch {
                    if root.isEmpty && dir.isEmpty { throw ScanError.rootUnavailable("\(error)") }
                    report.errors.append("\(error)")
                    unreadable.append(dir)
                    continue
                }
                for name in names.sorted(by: >) {
                    let path = RelativePath.join(dir, name)
                    if dir.isEmpty && name == RelativePath.stateDirectory { continue }
                    guard let m = try? fs.metadata(path) else { continue }
                    if ignore.isIgnored(path, isDirectory: m.kind == .directory) { continue }
                    try consider(path, m)
                    if m.kind == .directory { stack.append(path) }
                }
            }
        }
        // Whatever the index holds under a scanned root that the walk did not see is gone,
        // unless it is now ignored (new rules never delete on other peers) or was unreadable.
        var removed: [LocalChange] = []
        for root in scanRoots {
            for path in baseline.livePaths(under: root) where !seen.contains(path) {
                if Self.isStatePath(path) || unreadable.contains(where: { RelativePath.isWithin(path, $0) }) { continue }
                if ignore.isIgnored(path, isDirectory: baseline.state(of: path)?.metadata.kind == .directory)
                    || hasIgnoredAncestor(path, ignore) { continue }
                if (try? fs.metadata(path)) != nil { continue }  // appeared since the walk passed it
                removed.append(.removed(path: path))
            }
        }
        // Children before parents, so an applied batch never removes a non-empty directory.
        removed.sort { $0.path.utf8.count > $1.path.utf8.count }
        // A wiped, replaced or half-restored folder never becomes deletions.
        let most = missing == .deleteUnlessMost && removed.count >= options.massMissingMinimum
            && removed.count * 2 > baseline.liveCount()
        if !removed.isEmpty && (missing == .setAside || most) {
            report.setAside = removed.map(\.path)
            report.mostMissing = most
            removed = []
        }
        // The last changes found and the removals go out together when they fit one batch: a
        // rename or move is then one transaction, so peers see both halves in one manifest.
        if pending.count + removed.count <= options.batchSize {
            try flush(with: removed)
            return report
        }
        try flush()
        for start in stride(from: 0, to: removed.count, by: options.batchSize) {
            if isCancelled() { throw ScanError.cancelled }
            let batch = Array(removed[start..<min(start + options.batchSize, removed.count)])
            report.changes += batch.count
            try emit(batch)
        }
        return report
    }

    /// Hashes the pending files concurrently and returns the batch in walk order.
    private func hashAll(_ pending: [Pending], report: inout ScanReport) -> [LocalChange] {
        var results = [HashOutcome?](repeating: nil, count: pending.count)
        let jobs = pending.indices.filter { if case .hash = pending[$0] { return true } else { return false } }
        results.withUnsafeMutableBufferPointer { out in
            let out = out
            DispatchQueue.concurrentPerform(iterations: jobs.count) { j in
                let i = jobs[j]
                if case .hash(let path, let m) = pending[i] { out[i] = hashFile(path, m) }
            }
        }
        var batch: [LocalChange] = []
        batch.reserveCapacity(pending.count)
        for (i, p) in pending.enumerated() {
            switch p {
            case .ready(let change):
                batch.append(change)
            case .hash(let path, _):
                switch results[i]! {
                case .hashed(let m, let chunks):
                    report.hashedFiles += 1
                    report.hashedBytes += m.size
                    batch.append(.present(path: path, metadata: m, chunks: chunks))
                case .unstable: report.unstable.append(path)
                case .vanished: break
                case .failed(let why): report.errors.append(why)
                }
            }
        }
        return batch
    }

    private enum HashOutcome {
        case hashed(FileMetadata, [ChunkRef])
        case unstable, vanished
        case failed(String)
    }

    /// Hashes one file; a file whose size, mtime or ctime moves while it is read is retried,
    /// never indexed torn.
    private func hashFile(_ path: String, _ listed: FileMetadata) -> HashOutcome {
        for _ in 0..<options.attempts {
            do {
                let reader = try fs.openForReading(path)
                defer { reader.close() }
                let before = try reader.metadata()
                guard before.kind == .file else { return .vanished }
                let result = try hasher.hash(reader, expectedSize: before.size)
                let after = try reader.metadata()
                if after.size == before.size && after.mtimeNs == before.mtimeNs && after.ctimeNs == before.ctimeNs
                    && result.size == before.size {
                    return .hashed(before, result.chunks)
                }
            } catch let e as FileSystemError where e.errno == 2 || e.errno == 20 || e.errno == 40 {
                return .vanished  // ENOENT, ENOTDIR, ELOOP (replaced by a symlink)
            } catch {
                return .failed("\(error)")
            }
        }
        return .unstable
    }

    private func hasIgnoredAncestor(_ path: String, _ ignore: IgnoreRules) -> Bool {
        var p = RelativePath.parent(of: path)
        while !p.isEmpty {
            if ignore.isIgnored(p, isDirectory: true) { return true }
            p = RelativePath.parent(of: p)
        }
        return false
    }

    static func isStatePath(_ path: String) -> Bool {
        RelativePath.isWithin(path, RelativePath.stateDirectory)
    }

    /// Drops roots that lie inside other roots (shortest first; a root is kept unless one of its
    /// ancestors was).
    static func minimalRoots(_ roots: [String]) -> [String] {
        let unique = Set(roots)
        if unique.contains("") { return [""] }
        var kept: Set<String> = []
        var out: [String] = []
        for r in unique.sorted(by: { $0.utf8.count < $1.utf8.count }) {
            var parent = RelativePath.parent(of: r)
            var covered = false
            while !parent.isEmpty && !covered {
                covered = kept.contains(parent)
                parent = RelativePath.parent(of: parent)
            }
            if !covered { kept.insert(r); out.append(r) }
        }
        return out
    }
}
