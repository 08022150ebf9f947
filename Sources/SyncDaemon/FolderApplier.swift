@preconcurrency import Crypto
import Foundation
import Logging
import SyncCore
import SyncFS
import SyncReplication
import SyncSecurity
import SyncStore
import SyncWire

/// Applies a peer's batches to the folder (Protocol/wire.md, "Replication" 4–6): decisions from
/// `BatchPlan` (GlobalState), chunks through a `ChunkPull`, staged under `.syncd/tmp/`, then one
/// placement pass between scans (`SyncFS.FolderPlacer`), recorded in the index. Runs on the
/// exchange's apply queue, one batch at a time; what it needs of the sessions and of the model
/// comes in `Hooks`, of the scanner side in `Scanner` (both wired by their owners).
final class FolderApplier: @unchecked Sendable {
    typealias Step = FolderPlacer.Step

    let record: FolderRecord
    /// The folder's files: every operation done in the folder goes through it (confined to the
    /// folder, never following a symlink; SyncFS.POSIXFileSystem).
    let folder: POSIXFileSystem
    let store: IndexStore
    let me: ShortDeviceID
    let logger: Logger
    /// How long deleted files stay in `.syncd/trash/` (seconds) and how many conflict copies one
    /// file keeps (`DaemonConfiguration.Replication`).
    let trashRetention: TimeInterval
    let maxConflictCopies: Int
    /// Owner and modes of placed files (the folder's declared `Placement`, resolved).
    let placement: PlacementPolicy

    /// What an apply needs of the folder's scanner side (`FolderService`), wired by `FolderRuntime`.
    struct Scanner: Sendable {
        var isPaused: @Sendable () -> Bool
        /// A scan is queued or running (a digest taken now would be stale).
        var isBusy: @Sendable () -> Bool
        /// The user ran `syncd accept-deletions` in the last minutes.
        var deletionsAccepted: @Sendable () -> Bool
        var pauseForFullDisk: @Sendable (_ needed: Int64) -> Void
        /// Runs `body` with no scan running (placing and recording a batch).
        var exclusive: @Sendable (_ body: () throws -> Void) throws -> Void

        /// A folder with no scanner side: paused.
        static let none = Scanner(isPaused: { true }, isBusy: { true }, deletionsAccepted: { false },
                                  pauseForFullDisk: { _ in }, exclusive: { _ in throw PullError(description: "the folder is stopping") })
    }
    var scanner = Scanner.none

    /// What an apply needs of the sessions and the replication model (wired by `FolderExchange`).
    struct Hooks: Sendable {
        /// Adds to the folder's status counters (needed and done files and bytes, conflicts).
        var count: @Sendable (_ change: FolderExchange.Counters) -> Void
        /// The receiver's mass-deletion guard (`FolderModel.massDeletionHeld`): why batch `id`
        /// is held, or nil to go ahead.
        var holdDeletions: @Sendable (_ id: FolderModel.BatchID, _ deleting: Int, _ creating: Int, _ liveHere: Int) -> String?
        /// A chunk pull over the folder's sessions (nil without a chunk-id key).
        var pull: @Sendable (_ announcer: ShortDeviceID, _ syncEach: Bool) -> ChunkPull?

        static let none = Hooks(count: { _ in }, holdDeletions: { _, _, _, _ in "the folder is stopping" }, pull: { _, _ in nil })
    }
    var hooks = Hooks.none
    /// Where applied batches and conflicts are told (`DaemonEvents`); set by `FolderRuntime`.
    var events = FolderEvents.none

    /// The index as read for the batch being placed, and the batch's renames of local files
    /// (target → that file's index entry: staged as a hard link instead of a copy). Only used on
    /// the apply queue.
    var knownStates: [String: (metadata: FileMetadata, deleted: Bool)]?
    var renames: [String: FileEntry] = [:]

    init(record: FolderRecord, folder: POSIXFileSystem, store: IndexStore, me: ShortDeviceID, logger: Logger,
         replication: DaemonConfiguration.Replication, placement: PlacementPolicy = .none) {
        self.record = record
        self.placement = placement
        self.folder = folder
        self.store = store
        self.me = me
        self.logger = logger
        self.trashRetention = replication.trashDays * 86400
        self.maxConflictCopies = max(1, replication.maxConflicts)
        clearStaging()
    }


    /// Plans, stages and applies batch `id` (one manifest's entries): what failed, if anything, is
    /// retried (FolderModel decides how). The receiver's mass-deletion guard
    /// (`FolderModel.massDeletionHeld`) holds a batch that would delete most of our live files,
    /// from a peer that holds fewer, until the user runs `syncd accept-deletions` here.
    func apply(_ id: FolderModel.BatchID, _ listed: [ManifestEntry], origin: ShortDeviceID, from device: DeviceID) -> FolderModel.ApplyResult {
        let peer = device.short
        guard !scanner.isPaused() else { return .init(batchError: "the folder is paused") }
        var clock = StageClock()
        defer { renames = [:] }
        let entries: [FileEntry]
        do { entries = try resolvePieces(listed, from: peer) } catch {
            logger.warning("chunk lists from \(device.name) unavailable: \(error); will retry")
            return .init(batchError: "\(error)")
        }
        var unplaced: [(path: String, error: Error)] = []   // paths not applied this time (retried)
        let locals = (try? store.entries(folder: record.id, paths: entries.map(\.path))) ?? [:]
        let bytesNeeded = entries.reduce(Int64(0)) { $0 + ($1.deleted ? 0 : $1.metadata.size) }
        hooks.count(.init(needFiles: entries.count, needBytes: bytesNeeded))
        defer { hooks.count(.init(needFiles: -entries.count, needBytes: -bytesNeeded, doneFiles: entries.count, doneBytes: bytesNeeded)) }
        // SyncReplication decides each path from our entry and the origin's (the manifest's
        // signature makes the origin a trusted writer): the same `BatchPlan` the simulator runs.
        let plan = BatchPlan.make(entries, locals: locals, origin: origin)
        var steps = plan.steps.map(Step.init)
        let applied = plan.recordOnly
        let conflictsLocal = plan.conflictsLocal
        if plan.conflicts > 0 { hooks.count(.init(conflicts: plan.conflicts)) }
        events.conflicts(plan.conflictPaths)
        for note in plan.notes { logger.notice("\(note)") }
        let counts = plan.deletions(against: locals)
        do {
            let live = (try? store.stats(folder: record.id)).map { $0.files + $0.symlinks + $0.directories } ?? 0
            if let held = hooks.holdDeletions(id, counts.deleting, counts.creating, live) {
                let reason = held + "; if that is intended, run: syncd accept-deletions \(record.path)"
                logger.warning("\(reason)")
                return .init(batchError: reason)
            }
            renames = Self.renames(in: steps, locals: locals)   // read by stage() and place(), cleared on return
            clock.lap("plan")
            let unstaged = try stageAll(&steps, from: peer, clock: &clock)
            clock.lap("stage")
            if unstaged.values.contains(where: { "\($0)" == "disk full" }) { throw PullError(description: "disk full") }
            for (i, error) in unstaged {
                let path = steps[i].path
                if let e = error as? PullError, e.gone, peer == origin, id != 0 {   // 0: restore (nothing newer comes)
                    // Superseded at the source: its newer version comes in a later manifest.
                    logger.info("\(RelativePath.display(path)) changed again on \(device.name) before its chunks came; waiting for the newer version")
                } else {
                    unplaced.append((path, error))
                }
            }
            steps = steps.indices.filter { unstaged[$0] == nil }.map { steps[$0] }
        } catch {
            logger.warning("pull from \(device.name) failed: \(error); will retry")
            cleanStaged(steps)
            if "\(error)" == "disk full" { scanner.pauseForFullDisk(bytesNeeded) }
            return .init(batchError: "\(error)", deleted: counts.deleting, created: counts.creating)
        }
        guard !steps.isEmpty || !applied.isEmpty || !unplaced.isEmpty else { return .init(deleted: counts.deleting, created: counts.creating) }
        // A few files were fsynced as they were staged; many small ones are flushed at once here.
        let syncEach = Self.syncsEachFile(steps)
        var failed = unplaced
        var notDurable: Error?
        do {
            if !syncEach { try flush() }
            clock.lap("flush")
            try scanner.exclusive {
                clock.lap("wait")
                // The plan was made against the index as it was before staging; a scan may have
                // recorded a local edit since. Placing now would overwrite that edit unseen, so
                // plan again instead (the batch is retried against the new local versions).
                let current = try store.entries(folder: record.id, paths: entries.map(\.path))
                if let moved = entries.first(where: { current[$0.path]?.version != locals[$0.path]?.version }) {
                    throw PullError(description: "\(moved.path) changed here while its update was staged")
                }
                knownStates = try store.scanStates(folder: record.id, paths: entries.map(\.path))
                defer { knownStates = nil }
                let placed = try placer.place(steps, conflictsLocal: conflictsLocal, renames: renames, syncEach: syncEach)
                if placed.keptEdits > 0 { hooks.count(.init(conflicts: placed.keptEdits)) }
                failed += placed.failed
                clock.lap("place")
                // What was placed is recorded as it was right after placing it; what only changed history keeps
                // the metadata the scan saw — the disk's may be an edit no scan has seen yet, which
                // recording it would hide from every later scan (found by the simulator, seed 47).
                let placedStats = placed.done.map { e -> (entry: FileEntry, stat: FileMetadata) in
                    (e, e.deleted ? e.metadata : placed.metadata[e.path] ?? e.metadata)
                }
                let stats = applied.map { e in (entry: e, stat: locals[e.path].map { $0.deleted ? e.metadata : $0.metadata } ?? e.metadata) } + placedStats
                try store.recordRemoteEntries(stats, folder: record.id)
                if !placed.done.isEmpty { events.batchApplied(placed.done.map(\.path), from: device.description, seconds: clock.seconds) }
                notDurable = placed.flushError
                clock.lap("record")
            }
        } catch {
            logger.warning("applying changes from \(device.name) failed: \(error); will retry")
            cleanStaged(steps)
            return .init(batchError: "\(error)", deleted: counts.deleting, created: counts.creating)
        }
        if let notDurable {
            // In place and recorded, but not known to be on disk: not acknowledged, applied again.
            logger.warning("changes from \(device.name) placed but not flushed: \(notDurable); will retry")
            cleanStaged(steps)
            return .init(batchError: "flushing the folder failed: \(notDurable)", deleted: counts.deleting, created: counts.creating)
        }
        // The paths that failed are reported until they apply, and block acknowledging this manifest.
        let failing = Dictionary(failed.map { ($0.path, "\($0.error)") }, uniquingKeysWith: { a, _ in a })
        if !failed.isEmpty {
            for f in failed { logger.warning("cannot apply \(RelativePath.display(f.path)) from \(device.name): \(f.error); will retry") }
            cleanStaged(steps)
            return .init(failed: failing, deleted: counts.deleting, created: counts.creating)
        }
        logger.info("applied \(steps.count) changes from \(device.name) in \(clock)")
        pruneTrash()
        return .init(deleted: counts.deleting, created: counts.creating)
    }

    /// Files the batch creates whose content, mode and mtime are exactly those of a local file
    /// the same batch deletes: a rename or move on the peer (target → the local entry).
    static func renames(in steps: [Step], locals: [String: FileEntry]) -> [String: FileEntry] {
        var deleted: [[ChunkRef]: FileEntry] = [:]
        for case .delete(let e) in steps {
            if let local = locals[e.path], !local.deleted, local.kind == .file, !local.chunks.isEmpty { deleted[local.chunks] = local }
        }
        guard !deleted.isEmpty else { return [:] }
        var out: [String: FileEntry] = [:]
        var used: Set<String> = []
        for case .file(let e, _) in steps {
            guard let source = deleted[e.chunks], !used.contains(source.path), source.metadata.mode == e.metadata.mode,
                  source.metadata.mtimeNs == e.metadata.mtimeNs else { continue }
            used.insert(source.path)
            out[e.path] = source
        }
        return out
    }

    static func syncsEachFile(_ steps: [Step]) -> Bool { FolderPlacer.syncsEachFile(steps) }

    /// The placer of this folder: every operation through `folder`, unscanned edits checked
    /// against the index as read for this batch (`knownStates`).
    var placer: FolderPlacer {
        FolderPlacer(folder: folder, me: me, maxConflictCopies: maxConflictCopies,
                     indexed: { [self] path in try knownStates.map { $0[path] } ?? store.scanState(folder: record.id, path: path) },
                     trashDirectory: { [self] in trashDirectoryNow() },
                     temporaryName: { ".syncd/tmp/link-\(UInt64.random(in: 0...UInt64.max))" },
                     flush: { [self] in try flush() },
                     log: { [logger] in logger.notice("\($0)") }, policy: placement)
    }

    /// `.syncd/trash/<UTC time>` (relative to the folder): where this moment's deletions and
    /// displaced copies go.
    func trashDirectoryNow() -> String {
        ".syncd/trash/" + UTCTimestamp.compact(Int64(Date().timeIntervalSince1970 * 1e9))
    }

    /// Deleted files older than `trashRetention` leave the trash for good (checked after applies).
    func pruneTrash() {
        let cutoff = UTCTimestamp.compact(Int64((Date().timeIntervalSince1970 - trashRetention) * 1e9))
        for stamp in (try? folder.list(".syncd/trash")) ?? [] where stamp < cutoff {
            try? folder.removeTree(".syncd/trash/" + stamp)
        }
    }

    /// One `syncfs` for a batch of many files instead of one fsync per file.
    func flush() throws {
        let fd = open(record.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        if linuxSyncfs(fd) != 0 { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
    }

    func cleanStaged(_ steps: [Step]) {
        for step in steps {
            switch step {
            case .file(_, let staged), .conflictCopy(_, let staged, _): if !staged.isEmpty { try? folder.remove(staged) }
            default: break
            }
        }
    }

    // MARK: staging

    /// Stages every file of the batch (the chunks of all of them scheduled together, so a batch of
    /// 1,000 small files costs a few round trips and a big file streams from every peer). Renames
    /// of a local file are staged as a hard link. Returns the steps (by index) that could not be
    /// staged, with the reason; the others are staged whatever happens to those.
    func stageAll(_ steps: inout [Step], from peer: ShortDeviceID, clock: inout StageClock) throws -> [Int: Error] {
        let syncEach = Self.syncsEachFile(steps)
        let workers = 4
        let dirs = try (0..<workers).map(stagingDirectory)
        var jobs: [ChunkPull.Job] = []
        for (i, step) in steps.enumerated() {
            let entry: FileEntry
            switch step {
            case .file(let e, _), .conflictCopy(let e, _, _): entry = e
            default: continue
            }
            // Spread over a few directories: creating a file holds its directory's lock (on this
            // test machine's ext4 the wait was a fifth of the receiver's CPU in the `small` benchmark).
            let temp = dirs[i % workers] + "/pull-\(UInt64.random(in: 0...UInt64.max))"
            if let source = renames[entry.path], linkRenamed(source, to: temp, syncEach: syncEach) {
                steps[i] = steps[i].staged(at: temp)
                continue
            }
            jobs.append(.init(key: i, chunks: entry.chunks, destination: .file(temp, entry.metadata)))
        }
        clock.lap("plan pulls")
        guard let pull = hooks.pull(peer, syncEach) else {
            return Dictionary(uniqueKeysWithValues: jobs.map { ($0.key, PullError(description: "no chunk-id key") as Error) })
        }
        let outcome = pull.run(jobs)
        for job in jobs where outcome.done.contains(job.key) { steps[job.key] = steps[job.key].staged(at: job.temp!) }
        return outcome.failures
    }

    /// A rename staged without copying: a hard link to the local file, if that file is still
    /// exactly what the index says (same size, mtime, inode…; mode and mtime already match the
    /// entry, so the shared inode is not touched).
    func linkRenamed(_ source: FileEntry, to temp: String, syncEach: Bool) -> Bool {
        guard let disk = try? folder.metadata(source.path), disk.kind == .file, disk.looksUnchanged(from: source.metadata),
              (try? folder.link(source.path, to: temp)) != nil else { return false }
        if syncEach && (try? folder.synchronize(temp)) == nil { try? folder.remove(temp); return false }
        return true
    }

    /// Where staging worker `k` writes: `.syncd/tmp/<k>`.
    func stagingDirectory(_ worker: Int) throws -> String {
        let dir = ".syncd/tmp/\(worker)"
        do { try folder.makeDirectory(dir, mode: 0o700) } catch let e as FileSystemError where e.errno == EEXIST {}
        return dir
    }

    /// Staged files a crash left behind (never renamed into place) are thrown away at start-up.
    func clearStaging() {
        try? folder.removeTree(".syncd/tmp")
    }

    /// The entries with their full chunk lists: pieces this folder holds are read from the index,
    /// the rest fetched like chunks (one pull), verified against their keyed ids, and kept.
    func resolvePieces(_ listed: [ManifestEntry], from peer: ShortDeviceID) throws -> [FileEntry] {
        let refs = listed.flatMap { $0.pieces ?? [] }
        guard !refs.isEmpty else { return listed.map(\.entry) }
        guard let pull = hooks.pull(peer, false) else { throw PullError(description: "no chunk-id key") }
        var have = try store.pieces(refs.map(\.id), folder: record.id)
        var missing: [ChunkListPieces.Ref] = []
        var seen: Set<ChunkID> = []
        for r in refs where have[r.id] == nil && seen.insert(r.id).inserted { missing.append(r) }
        if !missing.isEmpty {
            let outcome = pull.run(missing.enumerated().map { .init(key: $0, chunks: [$1.chunk], destination: .memory) })
            if let (i, error) = outcome.failures.min(by: { $0.key < $1.key }) {
                throw PullError(description: "chunk-list piece \(missing[i].id) did not arrive: \(error)")
            }
            let fetched = missing.enumerated().map { i, r in (id: r.id, bytes: outcome.memory[i] ?? []) }
            for f in fetched { have[f.id] = f.bytes }
            try store.storePieces(fetched, folder: record.id)
        }
        return try listed.map { m in
            try m.resolved(with: (m.pieces ?? []).map { r in try ChunkListPieces.decode(have[r.id] ?? [], as: r) })
        }
    }
}

/// Why a file (or a batch) could not be fetched and staged.
struct PullError: Error, CustomStringConvertible {
    let description: String
    /// The peer that announced this version answered that it no longer has the chunk (its file
    /// changed again), and nobody else had it: a newer version of the path is on its way.
    var gone = false
}

extension FolderPlacer.Step {
    /// A file or conflict copy whose content is now staged at `temp`.
    func staged(at temp: String) -> Self {
        switch self {
        case .file(let e, _): .file(e, staged: temp)
        case .conflictCopy(let e, _, let name): .conflictCopy(e, staged: temp, name: name)
        default: self
        }
    }
}

/// Where an apply spends its time, for the log line: "412 ms (plan 3, pull 120, …)".
struct StageClock: CustomStringConvertible {
    private var start = DispatchTime.now(), last = DispatchTime.now()
    private var laps: [(String, UInt64)] = []

    mutating func lap(_ name: String) {
        let now = DispatchTime.now()
        laps.append((name, (now.uptimeNanoseconds - last.uptimeNanoseconds) / 1_000_000))
        last = now
    }

    /// Seconds since the apply started.
    var seconds: Double { Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9 }

    var description: String {
        let total = (DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1_000_000
        return "\(total) ms (" + laps.map { "\($0.0) \($0.1)" }.joined(separator: ", ") + ")"
    }
}

/// syncfs(2): Glibc's module map hides it behind _GNU_SOURCE.
@_silgen_name("syncfs")
private func linuxSyncfs(_ fd: Int32) -> Int32
