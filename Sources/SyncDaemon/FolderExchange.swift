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
///
/// This file holds the sessions, sending and receiving manifests, and serving; planning and
/// placing are in FolderExchange+Apply.swift, fetching and staging in FolderExchange+Pull.swift.
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
        /// The last digest we sent this peer, and its latest one (anti-entropy).
        var sentDigest: SessionMessage.Digest?
        var theirDigest: SessionMessage.Digest?
        /// Since when the digests differ while both sides are caught up.
        var digestDifferSince: Date?
        /// The sequence the peer announced last (hello, digest, manifests): what it holds of its own index.
        var announced: UInt64 = 0
        /// We asked this peer to resend its whole index (anti-entropy): its manifests below our
        /// applied floor are expected on this session, applied, and not taken for replays.
        var resending = false
        /// Deletions minus creations of live paths applied from this peer on this session, and the
        /// deletions alone: the receiver's mass-deletion guard counts a session's batches together.
        var netDeleted = 0
        var deleted = 0
        /// Origins a change of which failed to apply on this session: nothing of theirs is
        /// acknowledged any more until the session is redialled.
        var failedOrigins: Set<UInt64> = []
        init(device: DeviceID, send: @escaping @Sendable (SessionMessage) -> Void) { self.device = device; self.send = send }
    }

    /// A chunk request in flight: answered once (the chunk, or nil for a refusal, a timeout or a
    /// session that ended), waited on by any number of stagers. A condition variable, not a
    /// semaphore: libdispatch traps when a semaphore is freed below its initial value, which a
    /// request abandoned mid-wait did (SIGILL in `_dispatch_semaphore_dispose`).
    final class PendingRequest: @unchecked Sendable {
        private let condition = NSCondition()
        private var answered = false
        private var answer: [UInt8]?
        /// The peer asked (its short id), so a session that ends fails its requests at once.
        var peer: ShortDeviceID = 0
        /// Called once the answer (or a refusal) is in, on the answering thread.
        var onDone: (@Sendable () -> Void)?

        private var refused = false

        /// The chunk's bytes once answered; nil before, or when refused.
        var bytes: [UInt8]? { condition.lock(); defer { condition.unlock() }; return answer }

        /// Whether the peer itself answered that it does not have the chunk (request-failed) —
        /// not a session that ended or a peer left out for stalling, which also answer nil.
        var refusedByPeer: Bool { condition.lock(); defer { condition.unlock() }; return refused }

        /// Records the answer (the first one counts) and wakes every waiter.
        func complete(_ bytes: [UInt8]?, refusedByPeer: Bool = false) {
            condition.lock()
            guard !answered else { condition.unlock(); return }
            answered = true
            answer = bytes
            refused = bytes == nil && refusedByPeer
            let done = onDone
            condition.broadcast()
            condition.unlock()
            done?()
        }

        /// Whether the answer came within `timeout` seconds; once it has, every wait returns at once.
        func wait(_ timeout: TimeInterval) -> Bool {
            let deadline = Date().addingTimeInterval(timeout)
            condition.lock()
            defer { condition.unlock() }
            while !answered {
                if !condition.wait(until: deadline) { return answered }
            }
            return true
        }
    }


    struct Counters: Sendable {
        var needFiles = 0, needBytes: Int64 = 0, conflicts = 0, bytesIn: Int64 = 0, bytesOut: Int64 = 0
        /// Why the last batch failed as a whole (cleared by the next batch that applies), e.g. a
        /// full disk or chunk lists that did not arrive.
        var batchError: String?
        /// Paths whose change failed to apply, with the reason: retried until they apply or a
        /// newer version of the path is recorded.
        var failing: [String: String] = [:]

        /// What `status` shows as `pullError`: nil when nothing is failing.
        var pullError: String? {
            let paths = failing.keys.sorted().prefix(5).map { "\(RelativePath.display($0)): \(failing[$0]!)" }
            let all = (batchError.map { [$0] } ?? []) + paths + (failing.count > 5 ? ["and \(failing.count - 5) more paths"] : [])
            return all.isEmpty ? nil : all.joined(separator: "; ")
        }
    }

    /// How long deleted files stay in `.syncd/trash/` (seconds) and how many conflict copies one
    /// file keeps (`DaemonConfiguration.Replication`).
    let trashRetention: TimeInterval
    let maxConflictCopies: Int

    static let entriesPerManifest = 1000
    static let requestWindow = 64
    /// How long a chunk request may wait for its answer before the chunk is asked of the next peer
    /// (seconds). A session that goes silent is closed by its keepalive and fails its requests
    /// at once, so this only bounds a peer that is connected but slow.
    static let requestTimeout: TimeInterval = 10

    /// The session's smoothed round-trip time to a peer (from its keepalive), nil before the first pong.
    var rtt: (@Sendable (ShortDeviceID) -> Duration?)?

    /// How long to wait for a chunk from `peer` before asking the next one: eight round trips
    /// (a window of requests queues behind one another), at least 2 s, `requestTimeout` while the
    /// round trip is unknown.
    func requestTimeout(for peer: ShortDeviceID) -> TimeInterval {
        guard let rtt = rtt?(peer) else { return Self.requestTimeout }
        let seconds = Double(rtt.components.seconds) + Double(rtt.components.attoseconds) / 1e18
        return min(Self.requestTimeout, max(2, 8 * seconds))
    }

    let folderID: [UInt8]
    let access: AccessKind
    let record: FolderRecord
    /// The folder's files: every operation done in the folder goes through it (confined to the
    /// folder, never following a symlink; SyncFS.POSIXFileSystem).
    let folder: POSIXFileSystem
    let keys: FolderKeys
    let manifestKeys: ManifestKeys
    let folderKey: Curve25519.Signing.PublicKey
    let ids: ChunkHasher?
    let store: IndexStore
    let sealed: SealedChunkStore
    let me: ShortDeviceID
    let indexID: UInt64
    var logger: Logger
    weak var service: FolderService?
    /// Live members that gossip says hold this folder (set by the daemon).
    var announcedPeers: (@Sendable () -> Set<ShortDeviceID>)?

    let lock = Lock()
    /// Set by `stop`: the folder is no longer served (removed, or the daemon is shutting down), and why.
    var stopped = false
    var stopReason = FolderExchange.removedReason
    var guardState: ManifestGuard?
    var inFlight: Set<[UInt64]> = []
    var links: [ShortDeviceID: PeerLink] = [:]
    var pending: [UInt32: PendingRequest] = [:]
    /// Peers that let a request time out: left out of the pull's sources until then.
    var stalled: [ShortDeviceID: DispatchTime] = [:]
    static let stallPause = 10.0
    var nextRequest: UInt32 = 0
    var counters = Counters()
    /// Our latest digest (recomputed when the sequence moves), peers due a full index resend at
    /// their next hello, and when each was last resent in full.
    var digestCache: SessionMessage.Digest?
    var fullResync: Set<ShortDeviceID> = []
    var lastRepair: [ShortDeviceID: Date] = [:]
    var digestTimer: DispatchSourceTimer?
    let digestQueue: DispatchQueue
    /// Failed applies in a row per origin: the redial waits `retryBackoffBase` · 2ⁿ seconds.
    var retryAttempts: [UInt64: Int] = [:]
    static let retryBackoffBase = 0.5
    static let retryBackoffMax = 8.0
    let work: DispatchQueue
    let pushQueue: DispatchQueue
    /// Chunks of small files fetched ahead for the whole batch, and where the batch's chunks sit
    /// locally (both only written on `work` before staging starts).
    var prefetched: [ChunkID: PendingRequest] = [:]
    var knownLocations: [ChunkID: ChunkLocation]?
    var knownStates: [String: (metadata: FileMetadata, deleted: Bool)]?
    /// Files of the batch that are renames of a local file the batch deletes (target → that
    /// file's index entry): staged as a hard link instead of a copy.
    var renames: [String: FileEntry] = [:]
    /// The keyed id of a chunk of zeros, by size (holes are neither fetched nor written).
    var zeroChunkIDs: [UInt32: ChunkID] = [:]

    init(record: FolderRecord, keys: FolderKeys, store: IndexStore, device: ShortDeviceID, logger: Logger,
         replication: DaemonConfiguration.Replication) throws {
        self.record = record
        self.folder = POSIXFileSystem(root: record.path)
        self.trashRetention = replication.trashDays * 86400
        self.maxConflictCopies = max(1, replication.maxConflicts)
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
        digestQueue = DispatchQueue(label: "syncd.exchange.\(record.id).digest")
        clearStaging()
        work.async { [self] in prunePieces() }
        startAntiEntropy()
    }

    var sessionPSK: [UInt8] { keys.sessionPSK }

    // MARK: sessions

    /// A session for this folder is up: remember it and say hello. A session that got this far
    /// after `stop` (accepted or dialled just before) is closed instead.
    func attach(_ link: PeerLink) {
        let refused: Bool = lock.withLock {
            if stopped { return true }
            links[link.device.short] = link; stalled[link.device.short] = nil
            return false
        }
        if refused { link.close?(lock.withLock { stopReason }); return }
        let access: SessionMessage.AccessByte = switch keys.access {
        case .readWrite: .readWrite
        case .readOnly: .readOnly
        case .storage: .storage
        }
        let sequence = (try? store.sequence(folder: record.id)) ?? 0
        link.send(.hello(.init(access: access, indexID: indexID, sequence: UInt64(max(sequence, 0)))))
    }

    /// A session ended: its requests fail now (the stagers ask other peers at once, instead of
    /// waiting out a timeout on a peer that is gone).
    func detach(_ link: PeerLink) {
        let orphaned: [PendingRequest] = lock.withLock {
            guard links[link.device.short] === link else { return [] }
            links[link.device.short] = nil
            let gone = pending.filter { $0.value.peer == link.device.short }
            for id in gone.keys { pending[id] = nil }
            return Array(gone.values)
        }
        for p in orphaned { p.complete(nil) }
    }

    /// A request to `peer` timed out while another peer could serve: fail its other requests now
    /// (their stagers ask the others at once, instead of one timeout per chunk in turn) and leave
    /// it out of the pull's sources for `stallPause` seconds, or until it answers anything.
    func stall(_ peer: ShortDeviceID) {
        let orphaned: [PendingRequest] = lock.withLock {
            guard links.values.contains(where: { $0.device.short != peer && $0.access != nil }) else { return [] }
            stalled[peer] = .now() + Self.stallPause
            let gone = pending.filter { $0.value.peer == peer }
            for id in gone.keys { pending[id] = nil }
            return Array(gone.values)
        }
        for p in orphaned { p.complete(nil) }
    }

    func isConnected(_ device: ShortDeviceID) -> Bool { lock.withLock { links[device] != nil } }

    static let removedReason = "this folder is no longer shared here"
    static let shutdownReason = "the daemon is shutting down"

    /// Stops serving the folder (`syncd remove`, shutdown): no new session or manifest is taken,
    /// the anti-entropy timer stops, every session of the folder is closed — its chunk requests
    /// fail at once, so an apply still fetching gives up (the peer resends it next time) — and the
    /// apply in flight, if any, is waited for until `deadline`, so none is cut off while it places
    /// files and records them. False when it was still running at `deadline`. `reason` is told to
    /// the peers.
    @discardableResult
    func stop(waitingUntil deadline: DispatchTime, reason: String = FolderExchange.removedReason) -> Bool {
        let open: [PeerLink] = lock.withLock {
            stopped = true
            stopReason = reason
            return Array(links.values)
        }
        digestTimer?.cancel()
        for link in open {
            link.close?(reason)
            detach(link)
        }
        let idle = DispatchSemaphore(value: 0)
        work.async { idle.signal() }
        return idle.wait(timeout: deadline) == .success
    }

    func handle(_ message: SessionMessage, from link: PeerLink) -> Outcome {
        // Stopped: its sessions are being closed; what they still deliver meanwhile is dropped.
        if lock.withLock({ stopped }) { return .reply([]) }
        switch message {
        case .hello(let hello):
            let resendAll = lock.withLock {
                link.access = hello.access; link.indexID = hello.indexID; link.announced = hello.sequence
                let all = fullResync.remove(link.device.short) != nil
                link.resending = all
                return all
            }
            // Tell the peer how far we hold its index, so it sends only what is newer (all of it
            // after the anti-entropy digests disagreed).
            let all = (try? store.remoteManifestProgress(folder: record.id)) ?? [:]
            let progress = all[link.device.short]
            let held = resendAll ? 0 : progress.map { $0.indexID == hello.indexID ? $0.lastSequence : 0 } ?? 0
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
        case .digest(let digest):
            lock.withLock { link.theirDigest = digest; link.announced = max(link.announced, digest.sequence) }
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
            complete(id, nil, refusedByPeer: true)
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
    func relayStoredManifests(to link: PeerLink) {
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
    func withPieces(_ entries: [FileEntry]) -> ([ManifestEntry], [ChunkID: [UInt8]]) {
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
    func prunePieces() {
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
    func storeChunks(of entries: [FileEntry], pieces: [ChunkID: [UInt8]], on link: PeerLink) {
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
    func intake(_ bytes: [UInt8], from link: PeerLink) -> Outcome {
        let manifest: SealedManifest
        do { manifest = try SealedManifest(decoding: bytes) } catch { return .refuse("malformed manifest: \(error)") }
        do { try manifest.verify(keys: manifestKeys) } catch { return .refuse("refused manifest: \(error)") }
        let header = manifest.header
        let key = [header.origin, header.indexID, header.lastSequence]
        var resent = false
        let verdict: Outcome? = lock.withLock {
            let floor = loadGuard()
            if floor.admit(header) == .duplicate && link.access == .storage && header.origin != link.device.short {
                // A storage peer relaying what we already got from the writer itself: not an attack.
                return .reply([])
            }
            if floor.admit(header) == .duplicate && link.resending && header.origin == link.device.short && !inFlight.contains(key) {
                resent = true   // the full resend we asked for: applied again, the floor stays where it is
            } else if floor.admit(header) != .accept || inFlight.contains(key) {
                let held = floor.seen[header.origin]?.lastSequence ?? 0
                return .refuse("refused manifest: replayed or older than what we hold (origin \(String(header.origin, radix: 16)) "
                    + "sequence \(header.lastSequence) ≤ \(held))")
            }
            counters.bytesIn += Int64(bytes.count)
            if header.origin == link.device.short { link.announced = max(link.announced, header.lastSequence) }
            return nil
        }
        if let verdict { return verdict }
        let isResend = resent
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
            guard !lock.withLock({ stopped }) else {   // queued before `stop`: not applied, not acknowledged
                lock.withLock { _ = inFlight.remove(key) }
                return
            }
            // Once a change of this origin failed on this session, later manifests of the origin
            // are still applied (their changes land) but not recorded or acknowledged: what this
            // device holds of an origin is a prefix without gaps, so the origin keeps resending
            // from the failed change until it applies or a newer version replaces it.
            let blocked = lock.withLock { link.failedOrigins.contains(header.origin) }
            let ok = apply(entries, origin: header.origin, from: link)
            lock.withLock { _ = inFlight.remove(key) }
            if ok && !blocked, isResend || (try? recordApplied(header, bytes)) != nil {
                link.send(.indexAck(origin: header.origin, indexID: header.indexID, sequence: header.lastSequence))
                if keys.manifestKey != nil { lock.withLock { retryAttempts[header.origin] = nil } }
                return
            }
            let (first, delay): (Bool, Double) = lock.withLock {
                guard link.failedOrigins.insert(header.origin).inserted else { return (false, 0) }
                let attempt = retryAttempts[header.origin, default: 0]
                retryAttempts[header.origin] = attempt + 1
                return (true, min(Self.retryBackoffMax, Self.retryBackoffBase * Double(1 << min(attempt, 10))))
            }
            // A chunk the peer no longer has, a path in the way, a full disk, a paused folder:
            // start over after a backoff; the peer then resends its current entries from our floor.
            guard first else { return }
            DispatchQueue.global().asyncAfter(deadline: .now() + delay) { link.close?("resynchronizing after a failed apply") }
        }
        return .reply([])
    }

    func recordApplied(_ header: SealedManifest.Header, _ bytes: [UInt8]) throws {
        try store.storeRemoteManifest(folder: record.id, origin: header.origin, indexID: header.indexID,
                                      firstSequence: header.firstSequence, lastSequence: header.lastSequence, sealed: bytes)
        lock.withLock {
            var floor = loadGuard()
            floor.record(header)
            guardState = floor
        }
    }

    func loadGuard() -> ManifestGuard {
        if let guardState { return guardState }
        let progress = (try? store.remoteManifestProgress(folder: record.id)) ?? [:]
        let loaded = ManifestGuard(seen: progress.mapValues { .init(indexID: $0.indexID, lastSequence: $0.lastSequence) })
        guardState = loaded
        return loaded
    }

    /// A chunk for a peer: plaintext from our files (read-write and read-only), a sealed chunk
    /// from the sealed store (storage).
    func serve(id: UInt32, chunk: ChunkID, size: UInt32) -> SessionMessage {
        if keys.manifestKey == nil {
            if let bytes = sealed.read(chunk) { return .data(id: id, bytes: bytes) }
            return .requestFailed(id: id, reason: 1)
        }
        // No HMAC here: the receiver verifies every chunk, and a stale read just fails there.
        // Not in a file: perhaps a piece of a chunk list.
        guard let data = (try? store.locateChunk(chunk, folder: record.id)).flatMap({ $0 })
                .flatMap({ folder.read($0.path, offset: $0.offset, count: Int(size)) })
                ?? (try? store.pieces([chunk], folder: record.id))?[chunk] else {
            return .requestFailed(id: id, reason: 1)
        }
        lock.withLock { counters.bytesOut += Int64(data.count) }
        return .data(id: id, bytes: data)
    }

    /// A sealed chunk for safekeeping: checked against the folder signature, then written atomically.
    func keep(_ bytes: [UInt8]) -> Outcome {
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
        /// How far the peer holds our index.
        var acked: UInt64
        /// How far we hold the peer's own index, and how far it says it has come (read-write peers).
        var applied: UInt64
        var announced: UInt64
        var digest: String
    }

    var snapshot: (counters: Counters, peers: [PeerStatus]) {
        let floor = loadGuardLocked()
        let current = lock.withLock { Array(links.values) }
        let digests = current.map(digestState)
        return lock.withLock {
            (counters, zip(current, digests).map { link, digest in
                PeerStatus(device: link.device.description, connected: true,
                           acked: link.ackedIndexID == indexID ? link.acked : 0,
                           applied: floor.seen[link.device.short].map { $0.indexID == link.indexID ? $0.lastSequence : 0 } ?? 0,
                           announced: link.access == .readWrite ? link.announced : 0, digest: digest)
            })
        }
    }
}
