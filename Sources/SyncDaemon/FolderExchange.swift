@preconcurrency import Crypto
import Foundation
import Logging
import SyncCore
import SyncFS
import SyncSecurity
import SyncReplication
import SyncStore
import SyncWire

/// What one folder does with its sessions (Protocol/wire.md, "Replication"):
/// - hello, then each side acknowledges how far it holds the other's index, and the other sends
///   only newer entries — sealed manifests of at most 1,000 entries — and every later local change
///   at once;
/// - a manifest is verified (folder signature, rollback/replay floor, paths), then its entries are
///   planned against the local index, their chunks copied from local files or fetched from the
///   peer (pipelined, verified against their keyed ids), staged under `.syncd/tmp/`, flushed with
///   one `syncfs`, and renamed into place in one pass between scans — directories first,
///   deletions (to `.syncd/trash/`) last; then acknowledged;
/// - storage peers keep sealed manifests and chunks and serve them.
final class FolderExchange: @unchecked Sendable {
    enum Outcome: Equatable {
        case reply([SessionMessage])
        /// Refuse and close the session; the reason is logged and told to the peer.
        case refuse(String)
    }

    /// One established session with a peer for this folder.
    final class PeerLink: @unchecked Sendable {
        let device: DeviceID
        let send: @Sendable (SessionMessage) -> Void
        /// Ends the session; the dialer reconnects and the peer resends from our applied floor.
        var close: (@Sendable (String) -> Void)?
        var access: SessionMessage.AccessByte?
        var indexID: UInt64 = 0
        /// How far the peer holds our index (its index-ack of our origin).
        var acked: UInt64 = 0
        var ackedIndexID: UInt64 = 0
        /// The last sequence we sent; nil until the peer told us where to start.
        var lastSent: Int64?
        /// Versions this peer sent us and we applied (path → encoded vector): never sent back.
        var received: [String: [UInt8]] = [:]
        /// Sealed chunks already pushed to this (storage) peer.
        var storedChunks: Set<ChunkID> = []
        /// What this peer holds of other origins' indexes (relays from a storage peer).
        var floors: [UInt64: (indexID: UInt64, sequence: UInt64)] = [:]
        var relayed = false
        init(device: DeviceID, send: @escaping @Sendable (SessionMessage) -> Void) { self.device = device; self.send = send }
    }

    /// A chunk request in flight. Several stagers may wait for one (a chunk two files share).
    final class PendingRequest: @unchecked Sendable {
        let done = DispatchSemaphore(value: 0)
        var bytes: [UInt8]?
        /// Called once the answer (or a refusal) is in, on the session's thread.
        var onDone: (@Sendable () -> Void)?

        /// Whether the answer came within `timeout`; once it has, every later wait returns at once.
        func wait(_ timeout: DispatchTimeInterval) -> Bool {
            guard done.wait(timeout: .now() + timeout) == .success else { return false }
            done.signal()
            return true
        }
    }

    struct Counters: Sendable {
        var needFiles = 0, needBytes: Int64 = 0, conflicts = 0, bytesIn: Int64 = 0, bytesOut: Int64 = 0
        /// Why the last pull or apply failed (cleared by the next success), e.g. a full disk.
        var pullError: String?
    }

    /// How long deleted files stay in `.syncd/trash/` and how many conflict copies one file keeps
    /// (`syncd daemon --trash-days`, `--max-conflicts`).
    private let trashRetention: TimeInterval
    private let maxConflictCopies: Int

    static let entriesPerManifest = 1000
    static let requestWindow = 64
    static let requestTimeout: DispatchTimeInterval = .seconds(30)

    let folderID: [UInt8]
    let access: AccessKind
    let record: FolderRecord
    private let keys: FolderKeys
    private let manifestKeys: ManifestKeys
    private let folderKey: Curve25519.Signing.PublicKey
    private let ids: ChunkHasher?
    private let store: IndexStore
    private let sealed: SealedChunkStore
    private let me: ShortDeviceID
    private let indexID: UInt64
    private var logger: Logger
    weak var service: FolderService?
    /// Live members that gossip says hold this folder (set by the daemon).
    var announcedPeers: (@Sendable () -> Set<ShortDeviceID>)?

    private let lock = Lock()
    private var guardState: ManifestGuard?
    private var inFlight: Set<[UInt64]> = []
    private var links: [ShortDeviceID: PeerLink] = [:]
    private var pending: [UInt32: PendingRequest] = [:]
    private var nextRequest: UInt32 = 0
    private var counters = Counters()
    private let work: DispatchQueue
    private let pushQueue: DispatchQueue

    init(record: FolderRecord, keys: FolderKeys, store: IndexStore, device: ShortDeviceID, logger: Logger,
         trashDays: Double = 30, maxConflicts: Int = 10) throws {
        self.record = record
        self.trashRetention = trashDays * 86400
        self.maxConflictCopies = max(1, maxConflicts)
        self.keys = keys
        self.folderID = keys.folderID
        self.access = keys.access
        self.store = store
        self.me = device
        var logger = logger
        logger[metadataKey: "folder"] = "\(record.path)"
        self.logger = logger
        indexID = try store.indexID(folder: record.id)
        folderKey = try Curve25519.Signing.PublicKey(rawRepresentation: keys.folderPublicKey)
        manifestKeys = ManifestKeys(folderID: keys.folderID, publicKey: folderKey, manifestKey: keys.manifestKey,
                                    signingKey: keys.signingKey)
        ids = keys.chunkIDKey.map { ChunkHasher(key: $0) }
        sealed = SealedChunkStore(directory: record.path + "/.syncd/sealed")
        work = DispatchQueue(label: "syncd.exchange.\(record.id)")
        pushQueue = DispatchQueue(label: "syncd.exchange.\(record.id).push")
        Self.clearStaging(record.path)
        work.async { [self] in prunePieces() }
    }

    var sessionPSK: [UInt8] { keys.sessionPSK }

    // MARK: sessions

    /// A session for this folder is up: remember it and say hello.
    func attach(_ link: PeerLink) {
        lock.withLock { links[link.device.short] = link }
        let access: SessionMessage.AccessByte = switch keys.access {
        case .readWrite: .readWrite
        case .readOnly: .readOnly
        case .storage: .storage
        }
        let sequence = (try? store.sequence(folder: record.id)) ?? 0
        link.send(.hello(.init(access: access, indexID: indexID, sequence: UInt64(max(sequence, 0)))))
    }

    func detach(_ link: PeerLink) {
        lock.withLock { if links[link.device.short] === link { links[link.device.short] = nil } }
    }

    func isConnected(_ device: ShortDeviceID) -> Bool { lock.withLock { links[device] != nil } }

    func handle(_ message: SessionMessage, from link: PeerLink) -> Outcome {
        switch message {
        case .hello(let hello):
            lock.withLock { link.access = hello.access; link.indexID = hello.indexID }
            // Tell the peer how far we hold its index, so it sends only what is newer.
            let all = (try? store.remoteManifestProgress(folder: record.id)) ?? [:]
            let progress = all[link.device.short]
            let held = progress.map { $0.indexID == hello.indexID ? $0.lastSequence : 0 } ?? 0
            var acks: [SessionMessage] = []
            if hello.access == .storage && keys.manifestKey != nil {
                // A storage peer relays other devices' manifests: say how far we hold each origin.
                acks = all.filter { $0.key != link.device.short }
                    .map { .indexAck(origin: $0.key, indexID: $0.value.indexID, sequence: $0.value.lastSequence) }
            }
            return .reply(acks + [.indexAck(origin: link.device.short, indexID: hello.indexID, sequence: held)])
        case let .indexAck(origin, indexID, sequence):
            guard origin == me else {
                lock.withLock { link.floors[origin] = (indexID, sequence) }
                return .reply([])
            }
            if keys.manifestKey == nil { relayStoredManifests(to: link) }
            let start: Bool = lock.withLock {
                let matches = indexID == self.indexID
                link.ackedIndexID = indexID
                link.acked = matches ? sequence : 0
                if link.lastSent == nil { link.lastSent = Int64(matches ? sequence : 0); return true }
                return false
            }
            if start { pushLocalChanges() }
            return .reply([])
        case .ping(let n):
            return .reply([.pong(n)])
        case .pong, .close:
            return .reply([])
        case .index(let bytes):
            return intake(bytes, from: link)
        case .store(let bytes):
            return keep(bytes)
        case let .request(id, chunk, size):
            return .reply([serve(id: id, chunk: chunk, size: size)])
        case let .data(id, bytes):
            complete(id, bytes)
            return .reply([])
        case .requestFailed(let id, _):
            complete(id, nil)
            return .reply([])
        }
    }

    // MARK: sending our index

    /// Sends every connected peer the entries it has not seen, as sealed manifests. Only a
    /// read-write secret can seal: read-only peers never send their edits (status shows them).
    func pushLocalChanges() {
        guard keys.signingKey != nil else { return }
        pushQueue.async { [self] in
            let targets = lock.withLock { links.values.filter { $0.lastSent != nil } }
            for link in targets {
                while true {
                    let from = lock.withLock { link.lastSent ?? 0 }
                    guard let batch = try? store.entries(folder: record.id, after: from, limit: Self.entriesPerManifest),
                          let last = batch.last else { break }
                    // What came from this peer goes back as a bare sequence advance, not as entries.
                    let entries = lock.withLock {
                        batch.filter { e in
                            guard let v = link.received[e.path], v == e.version.encoded else { return true }
                            link.received[e.path] = nil
                            return false
                        }
                    }
                    let (listed, pieces) = withPieces(entries)
                    guard let manifest = try? SealedManifest.seal(listed, origin: me, indexID: indexID, keys: manifestKeys,
                                                                  sequences: (UInt64(batch[0].sequence), UInt64(last.sequence)))
                    else { break }
                    if lock.withLock({ link.access == .storage }) { storeChunks(of: entries, pieces: pieces, on: link) }
                    let bytes = manifest.encoded
                    lock.withLock {
                        link.lastSent = last.sequence
                        counters.bytesOut += Int64(bytes.count)
                    }
                    link.send(.index(bytes))
                }
            }
        }
    }

    /// Storage peers: send a peer every stored manifest of other origins that it does not hold
    /// yet, oldest first (writer A offline, B still gets A's data from here).
    private func relayStoredManifests(to link: PeerLink) {
        guard lock.withLock({ () -> Bool in defer { link.relayed = true }; return !link.relayed }) else { return }
        pushQueue.async { [self] in
            let floors = lock.withLock { link.floors }
            for m in (try? store.remoteManifests(folder: record.id)) ?? [] where m.origin != link.device.short {
                if let f = floors[m.origin], f.indexID == m.indexID, f.sequence >= m.lastSequence { continue }
                lock.withLock { counters.bytesOut += Int64(m.sealed.count) }
                link.send(.index(m.sealed))
            }
        }
    }

    /// The entries as a manifest carries them: a chunk list longer than `ChunkListPieces.inlineLimit`
    /// goes as pieces, which are kept in the index so peers can fetch them. Also returns the pieces.
    private func withPieces(_ entries: [FileEntry]) -> ([ManifestEntry], [ChunkID: [UInt8]]) {
        guard let ids else { return (entries.map { ManifestEntry($0) }, [:]) }
        var pieces: [ChunkID: [UInt8]] = [:]
        let listed = entries.map { e -> ManifestEntry in
            guard e.chunks.count > ChunkListPieces.inlineLimit else { return ManifestEntry(e) }
            let split = ChunkListPieces.split(e.chunks, ids: ids)
            for p in split { pieces[p.ref.id] = p.bytes }
            return ManifestEntry(e, pieces: split.map(\.ref))
        }
        do { try store.storePieces(pieces.map { ($0.key, $0.value) }, folder: record.id) } catch {
            // Without them stored, peers could not fetch them: send the lists inline instead.
            logger.warning("cannot keep chunk-list pieces: \(error)")
            return (entries.map { ManifestEntry($0) }, [:])
        }
        return (listed, pieces)
    }

    /// Pieces no live file's list is made of any more (older versions of big files) are dropped
    /// at start-up: pieces are derived from the lists, so the ones in use are recomputed.
    private func prunePieces() {
        guard let ids else { return }
        do {
            var keep: Set<ChunkID> = []
            for list in try store.chunkLists(folder: record.id, longerThan: ChunkListPieces.inlineLimit) {
                for piece in ChunkListPieces.split(list, ids: ids) { keep.insert(piece.ref.id) }
            }
            let dropped = try store.prunePieces(keeping: keep, folder: record.id)
            if dropped > 0 { logger.info("dropped \(dropped) chunk-list pieces no file uses") }
        } catch {
            logger.warning("cannot prune chunk-list pieces: \(error)")
        }
    }

    /// Sealed copies of the chunks (and chunk-list pieces) of `entries` for a storage peer, each
    /// sent once per session.
    private func storeChunks(of entries: [FileEntry], pieces: [ChunkID: [UInt8]], on link: PeerLink) {
        guard let chunkKey = keys.chunkKey, let signer = keys.signingKey else { return }
        func push(_ id: ChunkID, _ data: @autoclosure () -> [UInt8]?) {
            guard lock.withLock({ link.storedChunks.insert(id).inserted }), let data = data(),
                  let sealed = try? SealedChunk.seal(data, id: id, chunkKey: chunkKey, signer: signer) else { return }
            let bytes = sealed.encoded
            lock.withLock { counters.bytesOut += Int64(bytes.count) }
            link.send(.store(bytes))
        }
        for (id, bytes) in pieces { push(id, bytes) }
        for e in entries where !e.deleted && e.metadata.kind == .file {
            for c in e.chunks { push(c.id, localChunk(c)) }
        }
    }

    // MARK: receiving manifests

    /// A sealed manifest: verified by everyone; storage peers keep it, the others apply it.
    private func intake(_ bytes: [UInt8], from link: PeerLink) -> Outcome {
        let manifest: SealedManifest
        do { manifest = try SealedManifest(decoding: bytes) } catch { return .refuse("malformed manifest: \(error)") }
        do { try manifest.verify(keys: manifestKeys) } catch { return .refuse("refused manifest: \(error)") }
        let header = manifest.header
        let key = [header.origin, header.indexID, header.lastSequence]
        let verdict: Outcome? = lock.withLock {
            let floor = loadGuard()
            if floor.admit(header) == .duplicate && link.access == .storage && header.origin != link.device.short {
                // A storage peer relaying what we already got from the writer itself: not an attack.
                return .reply([])
            }
            if floor.admit(header) != .accept || inFlight.contains(key) {
                let held = floor.seen[header.origin]?.lastSequence ?? 0
                return .refuse("refused manifest: replayed or older than what we hold (origin \(String(header.origin, radix: 16)) "
                    + "sequence \(header.lastSequence) ≤ \(held))")
            }
            counters.bytesIn += Int64(bytes.count)
            return nil
        }
        if let verdict { return verdict }
        guard keys.manifestKey != nil else {
            // Storage: keeping it is applying it.
            do { try recordApplied(header, bytes) } catch { return .refuse("cannot store manifest: \(error)") }
            return .reply([.indexAck(origin: header.origin, indexID: header.indexID, sequence: header.lastSequence)])
        }
        let entries: [ManifestEntry]
        do { entries = try manifest.open(keys: manifestKeys) } catch { return .refuse("refused manifest: \(error)") }
        if let bad = entries.map(\.entry).first(where: { RelativePath.validate($0.path) != nil || $0.path == ".syncd" || $0.path.hasPrefix(".syncd/") }) {
            return .refuse("refused manifest: invalid path \(bad.path.debugDescription)")
        }
        lock.withLock { _ = inFlight.insert(key) }
        work.async { [self] in
            let ok = apply(entries, origin: header.origin, from: link)
            lock.withLock { _ = inFlight.remove(key) }
            guard ok, (try? recordApplied(header, bytes)) != nil else {
                // A chunk the peer no longer has (superseded), a full disk, a paused folder: start
                // over in a moment; the peer then sends its current entries from our applied floor.
                DispatchQueue.global().asyncAfter(deadline: .now() + 1) { link.close?("resynchronizing after a failed apply") }
                return
            }
            link.send(.indexAck(origin: header.origin, indexID: header.indexID, sequence: header.lastSequence))
        }
        return .reply([])
    }

    private func recordApplied(_ header: SealedManifest.Header, _ bytes: [UInt8]) throws {
        try store.storeRemoteManifest(folder: record.id, origin: header.origin, indexID: header.indexID,
                                      firstSequence: header.firstSequence, lastSequence: header.lastSequence, sealed: bytes)
        lock.withLock {
            var floor = loadGuard()
            floor.record(header)
            guardState = floor
        }
    }

    private func loadGuard() -> ManifestGuard {
        if let guardState { return guardState }
        let progress = (try? store.remoteManifestProgress(folder: record.id)) ?? [:]
        let loaded = ManifestGuard(seen: progress.mapValues { .init(indexID: $0.indexID, lastSequence: $0.lastSequence) })
        guardState = loaded
        return loaded
    }

    // MARK: planning and applying

    enum Step {
        case directory(FileEntry)
        case file(FileEntry, staged: String)
        case symlink(FileEntry)
        case delete(FileEntry)
        /// The remote version lost a conflict: keep its content beside ours.
        case conflictCopy(FileEntry, staged: String, name: String)
        /// The remote version of a symlink lost a conflict: keep the link beside ours.
        case conflictLink(FileEntry, name: String)
    }

    /// The step that puts `entry` in place.
    static func step(placing entry: FileEntry) -> Step {
        if entry.deleted { return .delete(entry) }
        switch entry.kind {
        case .directory: return .directory(entry)
        case .symlink: return .symlink(entry)
        case .file: return .file(entry, staged: "")
        }
    }

    /// Plans, stages and applies one manifest's entries; false if it must be retried later.
    private func apply(_ listed: [ManifestEntry], origin: ShortDeviceID, from link: PeerLink) -> Bool {
        guard let service, !service.isPaused else { return false }
        var clock = StageClock()
        let entries: [FileEntry]
        do { entries = try resolvePieces(listed, from: link) } catch {
            logger.warning("chunk lists from \(link.device.short.hex) unavailable: \(error); will retry")
            lock.withLock { counters.pullError = "\(error)" }
            return false
        }
        var steps: [Step] = []
        var applied: [FileEntry] = []
        var conflictsLocal: [String: String] = [:]   // path → conflict name for our losing version
        let locals = (try? store.entries(folder: record.id, paths: entries.map(\.path))) ?? [:]
        let needed = entries.map { remote in (remote, local: locals[remote.path]) }
        let bytesNeeded = needed.reduce(Int64(0)) { $0 + ($1.0.deleted ? 0 : $1.0.metadata.size) }
        lock.withLock { counters.needFiles += needed.count; counters.needBytes += bytesNeeded }
        defer { lock.withLock { counters.needFiles -= needed.count; counters.needBytes -= bytesNeeded } }
        do {
            // SyncReplication's GlobalState decides each path from our entry and the origin's
            // (the manifest's signature makes the origin a trusted writer); this loop only turns
            // its decisions into steps. Conflict copies are capped by moving the oldest to the
            // trash (`capConflictCopies`), so the planner itself never holds a conflict.
            let state = GlobalState(trustedWriters: [origin], configuration: .init(maxConflictCopies: .max))
            for (remote, local) in needed {
                let resolution = state.resolve(path: remote.path, local: local, peers: [origin: remote])
                var winner = remote
                winner.version = resolution.mergedVersion
                switch resolution.decision {
                case .inSync, .localIsNewer:
                    continue
                case .recordMergedVersion:
                    applied.append(winner)
                case .need(let entry):
                    winner = entry
                    winner.version = resolution.mergedVersion
                    if let local, !local.deleted, !winner.deleted, ConflictOrder.sameContent(local, winner),
                       local.metadata.mtimeNs == winner.metadata.mtimeNs {
                        applied.append(winner)   // only the history moved (say, our own version coming back merged)
                    } else if local == nil && winner.deleted {
                        applied.append(winner)   // a deletion of something we never had: remember it
                    } else {
                        steps.append(Self.step(placing: winner))
                    }
                case .conflict(let conflict):
                    lock.withLock { counters.conflicts += 1 }
                    logger.notice("conflict on \(remote.path): \(conflict.winnerIsLocal ? "our" : "the peer's") version wins")
                    for loser in conflict.losers {
                        // A conflict between two conflict copies keeps the loser beside it ("name 2"),
                        // not as a copy of a copy.
                        guard let copy = loser.copyName.map({ ConflictCopyName.original(of: remote.path) == nil ? $0 : remote.path })
                        else { continue }
                        if loser.isLocal {
                            conflictsLocal[remote.path] = copy
                        } else if loser.entry.kind == .symlink {
                            steps.append(.conflictLink(loser.entry, name: copy))
                        } else {
                            steps.append(.conflictCopy(loser.entry, staged: "", name: copy))
                        }
                    }
                    // The winner keeps its own vector (GlobalState, rule 5): nothing to record
                    // when it is ours already.
                    if !conflict.winnerIsLocal {
                        winner = conflict.winner
                        winner.version = resolution.mergedVersion
                        steps.append(Self.step(placing: winner))
                    }
                case .conflictHeld(let hold):
                    logger.warning("conflict on \(remote.path) held: \(hold)")
                case .refused(let problem):
                    logger.warning("refused \(remote.path.debugDescription) from \(String(origin, radix: 16)): \(problem)")
                }
            }
            waitForAnnouncedPeers(before: steps)
            clock.lap("plan")
            try stageAll(&steps, from: link, clock: &clock)
            clock.lap("stage")
        } catch {
            logger.warning("pull from \(link.device.short.hex) failed: \(error); will retry")
            lock.withLock { counters.pullError = "\(error)" }
            cleanStaged(steps)
            if "\(error)" == "disk full" { service.pauseForFullDisk(needed: bytesNeeded) }
            return false
        }
        guard !steps.isEmpty || !applied.isEmpty else { return true }
        // A few files were fsynced as they were staged; many small ones are flushed at once here.
        let syncEach = Self.syncsEachFile(steps)
        if !syncEach { flush() }
        clock.lap("flush")
        do {
            try service.exclusive {
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
                let done = try place(steps, conflictsLocal: conflictsLocal, syncEach: syncEach)
                clock.lap("place")
                let stats = (applied + done).map { e -> (entry: FileEntry, stat: FileMetadata) in
                    let fs = POSIXFileSystem(root: record.path)
                    let m = (e.deleted ? nil : (try? fs.metadata(e.path)) ?? nil) ?? e.metadata
                    return (e, m)
                }
                try store.recordRemoteEntries(stats, folder: record.id)
                clock.lap("record")
            }
        } catch {
            logger.warning("applying changes from \(link.device.short.hex) failed: \(error); will retry")
            cleanStaged(steps)
            return false
        }
        logger.info("applied \(steps.count) changes from \(link.device.short.hex) in \(clock)")
        lock.withLock { counters.pullError = nil }
        pruneTrash()
        lock.withLock { for e in entries { link.received[e.path] = e.version.encoded } }
        pushLocalChanges()   // pass them on to other peers (not back to this one)
        return true
    }

    /// Renames staged files into place in one pass: directories first (shallow to deep), then
    /// files, symlinks and conflict copies, deletions last (deep to shallow, into the trash).
    private func place(_ steps: [Step], conflictsLocal: [String: String], syncEach: Bool) throws -> [FileEntry] {
        let root = record.path
        var done: [FileEntry] = []
        func depth(_ p: String) -> Int { p.split(separator: "/").count }
        let trash = trashDirectoryNow()
        let dirs = steps.compactMap { if case .directory(let e) = $0 { e } else { nil } }.sorted { depth($0.path) < depth($1.path) }
        for e in dirs {
            try FileManager.default.createDirectory(atPath: root + "/" + e.path, withIntermediateDirectories: true)
            chmod(root + "/" + e.path, mode_t(e.metadata.mode & 0o7777))
            done.append(e)
        }
        for step in steps {
            switch step {
            case let .file(e, staged):
                let target = root + "/" + e.path
                try ensureParent(e.path)
                // An edit on disk that no scan has seen yet is kept first, named after itself.
                let unindexed = try keepUnindexedEdit(e.path)
                if !unindexed, let name = conflictsLocal[e.path], Self.exists(target) {
                    try renameWithoutReplacing(target, to: name)
                }
                guard rename(staged, target) == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
                done.append(e)
            case let .conflictCopy(_, staged, name):
                try ensureParent(name)
                try renameWithoutReplacing(staged, to: name)
            case let .conflictLink(e, name):
                try ensureParent(name)
                try renameWithoutReplacing(try makeLink(e), to: name)
            case .symlink(let e):
                try ensureParent(e.path)
                guard rename(try makeLink(e), root + "/" + e.path) == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
                done.append(e)
            case .directory, .delete:
                break
            }
        }
        let deletions = steps.compactMap { if case .delete(let e) = $0 { e } else { nil } }.sorted { depth($0.path) > depth($1.path) }
        for e in deletions {
            let target = root + "/" + e.path
            var st = stat()
            if lstat(target, &st) == 0 {
                if (st.st_mode & S_IFMT) == S_IFDIR {
                    if rmdir(target) != 0 { continue }   // not empty: something unknown is inside, keep it
                } else {
                    try keepUnindexedEdit(e.path, orTrashTo: trash)
                }
            }
            done.append(e)
        }
        if syncEach {
            // The directories whose entries changed, rather than the whole file system.
            var dirs: Set<String> = [root + "/.syncd/trash", trash]
            for step in steps {
                switch step {
                case .directory(let e), .file(let e, _), .symlink(let e), .delete(let e): dirs.insert(root + "/" + RelativePath.parent(of: e.path))
                case .conflictCopy(_, _, let name), .conflictLink(_, let name): dirs.insert(root + "/" + RelativePath.parent(of: name))
                }
            }
            for e in conflictsLocal.values { dirs.insert(root + "/" + RelativePath.parent(of: e)) }
            for dir in dirs { Self.fsyncPath(dir) }
        } else {
            flush()
        }
        return done
    }

    /// Batches of up to this many files are made durable file by file (fsync as each is staged,
    /// then the directories that changed); bigger ones with one `syncfs` before and after placing.
    /// `syncfs` flushes everything dirty on the file system — other applications' writes too — so
    /// it is kept for batches of many small files, where one flush beats hundreds.
    static let perFileSyncLimit = 32

    static func syncsEachFile(_ steps: [Step]) -> Bool {
        steps.lazy.filter { if case .directory = $0 { false } else { true } }.count <= perFileSyncLimit
    }

    static func fsyncPath(_ path: String) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        close(fd)
    }

    /// `e`'s symlink, made under `.syncd/tmp/` (never followed), ready to be renamed into place.
    private func makeLink(_ e: FileEntry) throws -> String {
        let temp = record.path + "/.syncd/tmp/link-\(UInt64.random(in: 0...UInt64.max))"
        try? FileManager.default.createDirectory(atPath: record.path + "/.syncd/tmp", withIntermediateDirectories: true)
        guard symlink(e.metadata.symlinkTarget ?? "", temp) == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        return temp
    }

    /// Before replacing or deleting a path: if the file on disk is not what the index says (an
    /// edit not scanned yet), move it aside as a conflict copy instead of losing it; if it is,
    /// move it to the trash when `trash` is given.
    /// Returns true when it moved an unindexed edit aside.
    @discardableResult
    private func keepUnindexedEdit(_ path: String, orTrashTo trash: String? = nil) throws -> Bool {
        let root = record.path
        let fs = POSIXFileSystem(root: root)
        guard let disk = try fs.metadata(path) else { return false }
        let indexed = try knownStates.map { $0[path] } ?? store.scanState(folder: record.id, path: path)
        if let indexed, !indexed.deleted, disk.looksUnchanged(from: indexed.metadata) {
            guard let trash else { return false }
            try moveToTrash(path, trash)
            return false
        }
        var local = FileEntry(path: path, metadata: disk, version: VersionVector(), sequence: 0)
        local.version = VersionVector([.init(device: me, value: 1)])
        let name = ConflictCopyName.original(of: path) != nil ? path : ConflictCopyName.make(for: path, loser: local) ?? path
        try renameWithoutReplacing(root + "/" + path, to: name)
        lock.withLock { counters.conflicts += 1 }
        logger.notice("kept an unscanned local edit of \(path) as \(name)")
        return true
    }

    /// Keeps at most `maxConflictCopies` conflict copies per file: the oldest go to the trash.
    private func capConflictCopies(of name: String) {
        guard let marker = name.range(of: ".sync-conflict-") else { return }
        let stem = String(name[..<marker.lowerBound])
        let dir = RelativePath.parent(of: name)
        let base = String(stem.split(separator: "/").last ?? "")
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: record.path + "/" + dir)) ?? [])
            .filter { $0.hasPrefix(base + ".sync-conflict-") }.sorted()
        guard names.count >= maxConflictCopies else { return }
        let trash = trashDirectoryNow()
        for old in names.prefix(names.count - maxConflictCopies + 1) {
            try? moveToTrash(RelativePath.join(dir, old), trash)
        }
    }

    /// `.syncd/trash/<UTC time>`: where this moment's deletions and displaced copies go.
    private func trashDirectoryNow() -> String {
        record.path + "/.syncd/trash/" + UTCTimestamp.compact(Int64(Date().timeIntervalSince1970 * 1e9))
    }

    /// Deleted files older than `trashRetention` leave the trash for good (checked after applies).
    private func pruneTrash() {
        let trash = record.path + "/.syncd/trash"
        let cutoff = UTCTimestamp.compact(Int64((Date().timeIntervalSince1970 - trashRetention) * 1e9))
        for stamp in (try? FileManager.default.contentsOfDirectory(atPath: trash)) ?? [] where stamp < cutoff {
            try? FileManager.default.removeItem(atPath: trash + "/" + stamp)
        }
    }

    /// Renames onto `name`, or onto `name` with " 2", " 3"… before the extension when something
    /// else already has that name: a conflict copy never replaces another file.
    private func renameWithoutReplacing(_ from: String, to name: String) throws {
        capConflictCopies(of: name)
        let (stem, ext) = ConflictCopyName.split(String(name.split(separator: "/").last ?? ""))
        var candidate = name
        var n = 1
        while Self.exists(record.path + "/" + candidate) {
            n += 1
            candidate = RelativePath.join(RelativePath.parent(of: name), "\(stem) \(n)\(ext)")
        }
        guard rename(from, record.path + "/" + candidate) == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
    }

    /// Whether anything is at `path`, a dangling symlink included (never followed).
    static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    private func moveToTrash(_ path: String, _ trash: String) throws {
        try FileManager.default.createDirectory(atPath: trash + "/" + RelativePath.parent(of: path), withIntermediateDirectories: true)
        guard rename(record.path + "/" + path, trash + "/" + path) == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
    }

    private func ensureParent(_ path: String) throws {
        let parent = RelativePath.parent(of: path)
        if !parent.isEmpty { try FileManager.default.createDirectory(atPath: record.path + "/" + parent, withIntermediateDirectories: true) }
    }

    /// One `syncfs` for a batch of many files instead of one fsync per file.
    private func flush() {
        let fd = open(record.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = linuxSyncfs(fd)
        close(fd)
    }

    private func cleanStaged(_ steps: [Step]) {
        for step in steps {
            switch step {
            case .file(_, let staged), .conflictCopy(_, let staged, _): if !staged.isEmpty { unlink(staged) }
            default: break
            }
        }
    }

    // MARK: pulling chunks

    /// A big pull right after start-up (a newcomer's first sync) should spread over every peer,
    /// not only the first one whose session came up: wait up to a second for the sessions to
    /// the other peers that announce the folder.
    private func waitForAnnouncedPeers(before steps: [Step]) {
        let bytes = steps.reduce(Int64(0)) { total, step in
            switch step {
            case .file(let e, _), .conflictCopy(let e, _, _): total + e.metadata.size
            default: total
            }
        }
        guard bytes > 8 << 20, let announced = announcedPeers else { return }
        let deadline = DispatchTime.now() + 1
        while DispatchTime.now() < deadline {
            let connected = lock.withLock { Set(links.values.filter { $0.access != nil }.map(\.device.short)) }
            if announced().isSubset(of: connected) { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    /// Chunks of small files fetched ahead for the whole batch, and where the batch's chunks sit
    /// locally (both only written on `work` before staging starts).
    private var prefetched: [ChunkID: PendingRequest] = [:]
    private var knownLocations: [ChunkID: ChunkLocation]?
    private var knownStates: [String: (metadata: FileMetadata, deleted: Bool)]?
    static let prefetchWindow = 256
    static let prefetchBudget = 64 << 20

    /// Small files cost a round trip each when staged one by one; instead, request the chunks of
    /// every small file of the batch ahead (up to `prefetchWindow` in flight, `prefetchBudget`
    /// bytes in all) from a helper thread, while the stagers write the files whose chunks are in:
    /// a batch of 1,000 × 4 KiB files costs a few round trips, and fetching overlaps writing.
    /// Returns a function that stops the helper.
    private func prefetchSmallFiles(_ entries: [FileEntry], from link: PeerLink) -> @Sendable () -> Void {
        // One read for where every chunk of the batch already is locally (renames, copies).
        let all = entries.flatMap(\.chunks).map(\.id)
        knownLocations = (try? store.locateChunks(all, folder: record.id)) ?? [:]
        var wanted: [(ChunkRef, PendingRequest)] = []
        var bytes = 0
        for e in entries where e.metadata.size <= 1 << 20 {
            for c in e.chunks where prefetched[c.id] == nil && knownLocations?[c.id] == nil {
                guard bytes + Int(c.size) <= Self.prefetchBudget else { break }
                bytes += Int(c.size)
                let p = PendingRequest()
                prefetched[c.id] = p
                wanted.append((c, p))
            }
        }
        guard !wanted.isEmpty else { return {} }
        let stop = Flag(), window = DispatchSemaphore(value: Self.prefetchWindow), order = wanted
        DispatchQueue.global().async { [self] in
            for (chunk, p) in order {
                // A peer that stopped answering: the stagers ask again, and other peers.
                guard window.wait(timeout: .now() + Self.requestTimeout) == .success, !stop.isRaised else { return }
                p.onDone = { window.signal() }
                send(p, for: chunk, to: link)
            }
        }
        return { stop.raise() }
    }

    /// Stages every file of the batch, four at a time: while one file waits for its chunks the
    /// others are verified and written, and file creation (a kernel cost that dominates small
    /// files) runs in parallel in four directories.
    private func stageAll(_ steps: inout [Step], from link: PeerLink, clock: inout StageClock) throws {
        let jobs = steps.indices.filter { i in
            switch steps[i] {
            case .file, .conflictCopy: true
            default: false
            }
        }
        guard !jobs.isEmpty else { return }
        let snapshot = steps
        let stopPrefetch = prefetchSmallFiles(jobs.compactMap { i -> FileEntry? in
            switch snapshot[i] {
            case .file(let e, _), .conflictCopy(let e, _, _): e
            default: nil
            }
        }, from: link)
        clock.lap("plan pulls")
        defer { stopPrefetch(); prefetched = [:]; knownLocations = nil }
        let results = Lock()
        var staged: [Int: String] = [:]
        var failure: Error?
        var next = 0
        let workers = min(4, jobs.count), syncEach = Self.syncsEachFile(steps)
        let dirs = try (0..<workers).map(stagingDirectory)
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            while true {
                let job: Int? = results.withLock {
                    guard failure == nil, next < jobs.count else { return nil }
                    defer { next += 1 }
                    return jobs[next]
                }
                guard let i = job else { return }
                let entry: FileEntry
                switch snapshot[i] {
                case .file(let e, _), .conflictCopy(let e, _, _): entry = e
                default: continue
                }
                do {
                    let path = try stage(entry, in: dirs[worker], from: link, syncEach: syncEach)
                    results.withLock { staged[i] = path }
                } catch {
                    results.withLock { if failure == nil { failure = error } }
                }
            }
        }
        for (i, path) in staged {
            switch steps[i] {
            case .file(let e, _): steps[i] = .file(e, staged: path)
            case .conflictCopy(let e, _, let name): steps[i] = .conflictCopy(e, staged: path, name: name)
            default: break
            }
        }
        if let failure { throw failure }
    }

    struct PullError: Error, CustomStringConvertible {
        let description: String
    }

    /// Where staging worker `k` writes: one directory per worker, because creating a file holds
    /// its directory's lock — two workers in one directory wait on each other (on this test
    /// machine's ext4 the wait was a fifth of the receiver's CPU in the `small` benchmark).
    private func stagingDirectory(_ worker: Int) throws -> String {
        let dir = record.path + "/.syncd/tmp/\(worker)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// Staged files a crash left behind (never renamed into place) are thrown away at start-up.
    static func clearStaging(_ folder: String) {
        try? FileManager.default.removeItem(atPath: folder + "/.syncd/tmp")
    }

    /// Writes `entry`'s content to a new temp file in `dir` (under `.syncd/tmp/`): chunks found in
    /// local files are copied, the rest requested from `link`, up to `requestWindow` at a time;
    /// every chunk is checked against its keyed id. Returns the temp path.
    private func stage(_ entry: FileEntry, in dir: String, from link: PeerLink, syncEach: Bool) throws -> String {
        guard let ids else { throw PullError(description: "no chunk-id key") }
        let temp = dir + "/pull-\(UInt64.random(in: 0...UInt64.max))"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        var ok = false
        defer {
            close(fd)
            if !ok { unlink(temp) }
        }
        var requested: [Int: (PendingRequest, PeerLink)] = [:]
        var nextToRequest = 0
        var offset: Int64 = 0
        var local: [Int: [UInt8]] = [:]
        var flushedTo: Int64 = 0
        for (i, chunk) in entry.chunks.enumerated() {
            while nextToRequest < entry.chunks.count && requested.count < Self.requestWindow && local.count < Self.requestWindow {
                let c = entry.chunks[nextToRequest]
                if prefetched[c.id] != nil {
                    // fetched ahead with the rest of the batch
                } else if let bytes = localChunk(c) {
                    local[nextToRequest] = bytes
                } else {
                    // Spread over every connected peer (the sender first in turn), retried elsewhere below.
                    let sources = self.sources(preferring: link)
                    let source = sources[nextToRequest % sources.count]
                    requested[nextToRequest] = (request(c, from: source), source)
                }
                nextToRequest += 1
            }
            var bytes = local.removeValue(forKey: i)
            if bytes == nil, let (p, source) = requested.removeValue(forKey: i) ?? prefetched[chunk.id].map({ ($0, link) }) {
                // Timed out, refused or unreadable: ask the other peers, one at a time.
                bytes = receive(p, from: source, chunk) ?? fetch(chunk, preferring: link, skipping: source)
                if bytes == nil { throw PullError(description: "chunk \(chunk.id) did not arrive from any peer") }
            }
            guard let data = bytes, data.count == Int(chunk.size), ids.chunkID(data) == chunk.id else {
                throw PullError(description: "chunk \(chunk.id) failed verification")
            }
            // pwrite may write part of the buffer (a file system filling up); the next call says why.
            var done = 0
            while done < data.count {
                let n = data.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, $0.count - done, off_t(offset) + off_t(done)) }
                if n > 0 { done += n; continue }
                let code = n < 0 ? errno : ENOSPC
                if code == EINTR { continue }
                throw code == ENOSPC || code == EDQUOT ? PullError(description: "disk full") : POSIXError(.init(rawValue: code) ?? .EIO)
            }
            offset += Int64(data.count)
            // Write-behind: start writing each 8 MiB to disk now, so the batch's final syncfs finds
            // little left to do and the disk works while the network does.
            if offset - flushedTo >= 8 << 20 {
                _ = linuxSyncFileRange(fd, flushedTo, offset - flushedTo, 2 /* SYNC_FILE_RANGE_WRITE */)
                flushedTo = offset
            }
        }
        fchmod(fd, mode_t(entry.metadata.mode & 0o7777))
        let mtime = timespec(tv_sec: Int(entry.metadata.mtimeNs / 1_000_000_000), tv_nsec: Int(entry.metadata.mtimeNs % 1_000_000_000))
        var times = [mtime, mtime]
        futimens(fd, &times)
        if syncEach && fsync(fd) != 0 {
            throw errno == ENOSPC || errno == EDQUOT ? PullError(description: "disk full") : POSIXError(.init(rawValue: errno) ?? .EIO)
        }
        ok = true
        return temp
    }

    /// The entries with their full chunk lists: pieces this folder holds are read from the index,
    /// the rest requested from the peers (all at once, then one by one from the next peer for any
    /// that failed), verified against their keyed ids, and kept.
    private func resolvePieces(_ listed: [ManifestEntry], from link: PeerLink) throws -> [FileEntry] {
        let refs = listed.flatMap { $0.pieces ?? [] }
        guard !refs.isEmpty else { return listed.map(\.entry) }
        guard ids != nil else { throw PullError(description: "no chunk-id key") }
        var have = try store.pieces(refs.map(\.id), folder: record.id)
        var missing: [ChunkListPieces.Ref] = []
        var seen: Set<ChunkID> = []
        for r in refs where have[r.id] == nil && seen.insert(r.id).inserted { missing.append(r) }
        if !missing.isEmpty {
            let sources = self.sources(preferring: link)
            let asked = missing.enumerated().map { i, r in (r, request(r.chunk, from: sources[i % sources.count]), sources[i % sources.count]) }
            var fetched: [(id: ChunkID, bytes: [UInt8])] = []
            for (ref, p, source) in asked {
                guard let piece = receive(p, from: source, ref.chunk) ?? fetch(ref.chunk, preferring: link, skipping: source) else { throw PullError(description: "chunk-list piece \(ref.id) did not arrive from any peer") }
                fetched.append((ref.id, piece))
                have[ref.id] = piece
            }
            try store.storePieces(fetched, folder: record.id)
        }
        return try listed.map { m in
            try m.resolved(with: (m.pieces ?? []).map { r in try ChunkListPieces.decode(have[r.id] ?? [], as: r) })
        }
    }

    /// One chunk from the first peer (other than `skipping`) that serves it intact, asking one at a time.
    private func fetch(_ chunk: ChunkRef, preferring link: PeerLink, skipping: PeerLink? = nil) -> [UInt8]? {
        for source in sources(preferring: link) where source !== skipping {
            if let plain = receive(request(chunk, from: source), from: source, chunk) { return plain }
        }
        return nil
    }

    /// Waits for the answer to a request: the chunk's plaintext if it arrived, opens (storage
    /// peers send sealed chunks) and matches its keyed id; nil if it timed out, was refused or is wrong.
    private func receive(_ p: PendingRequest, from source: PeerLink, _ chunk: ChunkRef) -> [UInt8]? {
        guard let ids, p.wait(Self.requestTimeout), let data = p.bytes else { return nil }
        guard let plain = opened(data, from: source, ids: ids), plain.count == Int(chunk.size), ids.chunkID(plain) == chunk.id else { return nil }
        return plain
    }

    /// Peers to fetch from: `link` first, then every other connected peer that can serve plaintext
    /// or (storage) sealed chunks we can open.
    private func sources(preferring link: PeerLink) -> [PeerLink] {
        let others = lock.withLock { links.values.filter { $0 !== link && $0.access != nil } }
        return [link] + others.sorted { $0.device.short < $1.device.short }
    }

    /// Plaintext of what a peer sent: storage peers send sealed chunks (signature checked, then
    /// decrypted and unpadded); nil if it does not open.
    private func opened(_ data: [UInt8], from source: PeerLink, ids: ChunkHasher) -> [UInt8]? {
        guard lock.withLock({ source.access == .storage }) else { return data }
        guard let chunkKey = keys.chunkKey, let sealed = try? SealedChunk(decoding: data) else { return nil }
        return try? sealed.open(chunkKey: chunkKey, ids: ids, folderKey: folderKey)
    }

    /// A chunk's bytes from a local file that has it, verified (the file may have changed).
    private func localChunk(_ chunk: ChunkRef) -> [UInt8]? {
        let location = knownLocations.map { $0[chunk.id] } ?? ((try? store.locateChunk(chunk.id, folder: record.id)) ?? nil)
        guard let ids, let at = location else { return nil }
        guard let data = Self.read(record.path + "/" + at.path, offset: at.offset, count: Int(chunk.size)),
              ids.chunkID(data) == chunk.id else { return nil }
        return data
    }

    static func read(_ path: String, offset: Int64, count: Int) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out = [UInt8](repeating: 0, count: count)
        let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
        return n == count ? out : nil
    }

    private func request(_ chunk: ChunkRef, from link: PeerLink) -> PendingRequest {
        let p = PendingRequest()
        send(p, for: chunk, to: link)
        return p
    }

    private func send(_ p: PendingRequest, for chunk: ChunkRef, to link: PeerLink) {
        let id: UInt32 = lock.withLock {
            nextRequest &+= 1
            pending[nextRequest] = p
            return nextRequest
        }
        link.send(.request(id: id, chunk: chunk.id, size: chunk.size))
    }

    private func complete(_ id: UInt32, _ bytes: [UInt8]?) {
        guard let p = lock.withLock({ () -> PendingRequest? in
            counters.bytesIn += Int64(bytes?.count ?? 0)
            return pending.removeValue(forKey: id)
        }) else { return }
        p.bytes = bytes
        p.done.signal()
        p.onDone?()
    }

    /// A chunk for a peer: plaintext from our files (read-write and read-only), a sealed chunk
    /// from the sealed store (storage).
    private func serve(id: UInt32, chunk: ChunkID, size: UInt32) -> SessionMessage {
        if keys.manifestKey == nil {
            if let bytes = sealed.read(chunk) { return .data(id: id, bytes: bytes) }
            return .requestFailed(id: id, reason: 1)
        }
        // No HMAC here: the receiver verifies every chunk, and a stale read just fails there.
        // Not in a file: perhaps a piece of a chunk list.
        guard let data = (try? store.locateChunk(chunk, folder: record.id)).flatMap({ $0 })
                .flatMap({ Self.read(record.path + "/" + $0.path, offset: $0.offset, count: Int(size)) })
                ?? (try? store.pieces([chunk], folder: record.id))?[chunk] else {
            return .requestFailed(id: id, reason: 1)
        }
        lock.withLock { counters.bytesOut += Int64(data.count) }
        return .data(id: id, bytes: data)
    }

    /// A sealed chunk for safekeeping: checked against the folder signature, then written atomically.
    private func keep(_ bytes: [UInt8]) -> Outcome {
        let chunk: SealedChunk
        do { chunk = try SealedChunk(decoding: bytes) } catch { return .refuse("malformed sealed chunk: \(error)") }
        do { try chunk.verify(folderKey: folderKey) } catch { return .refuse("refused sealed chunk: \(error)") }
        do { try sealed.write(chunk.id, bytes) } catch { return .refuse("cannot store sealed chunk: \(error)") }
        return .reply([])
    }

    // MARK: status

    struct PeerStatus {
        var device: String
        var connected: Bool
        var acked: UInt64
    }

    var snapshot: (counters: Counters, peers: [PeerStatus]) {
        lock.withLock {
            (counters, links.values.map { PeerStatus(device: $0.device.description, connected: true,
                                                     acked: $0.ackedIndexID == indexID ? $0.acked : 0) })
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

    var description: String {
        let total = (DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1_000_000
        return "\(total) ms (" + laps.map { "\($0.0) \($0.1)" }.joined(separator: ", ") + ")"
    }
}

/// syncfs(2) and sync_file_range(2): Glibc's module map hides them behind _GNU_SOURCE.
@_silgen_name("syncfs")
private func linuxSyncfs(_ fd: Int32) -> Int32

@_silgen_name("sync_file_range")
private func linuxSyncFileRange(_ fd: Int32, _ offset: Int64, _ count: Int64, _ flags: UInt32) -> Int32

/// Sealed chunks on disk, one file per chunk id under the folder's `.syncd/sealed/`, written as
/// temp file + fsync + rename so a crash leaves either no file or the whole one.
struct SealedChunkStore: Sendable {
    let directory: String

    func path(_ id: ChunkID) -> String { directory + "/" + Hex.encode(id.bytes) }

    func read(_ id: ChunkID) -> [UInt8]? {
        FileManager.default.contents(atPath: path(id)).map { Array($0) }
    }

    func write(_ id: ChunkID, _ bytes: [UInt8]) throws {
        let target = path(id)
        if FileManager.default.fileExists(atPath: target) { return }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let temp = target + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        var written = 0
        let ok = bytes.withUnsafeBytes { raw -> Bool in
            while written < raw.count {
                let n = Foundation.write(fd, raw.baseAddress! + written, raw.count - written)
                if n <= 0 { return false }
                written += n
            }
            return fsync(fd) == 0
        }
        close(fd)
        guard ok, rename(temp, target) == 0 else {
            let code = POSIXErrorCode(rawValue: errno) ?? .EIO
            unlink(temp)
            throw POSIXError(code)
        }
    }
}
