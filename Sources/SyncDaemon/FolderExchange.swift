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
/// - a manifest is verified (folder signature, rollback/replay floor, paths), admitted by the
///   model, and applied by `FolderApplier` (planned, its chunks pulled by a `ChunkPull`, staged,
///   placed in one pass between scans); then acknowledged;
/// - storage peers keep sealed manifests and chunks and serve them.
///
/// A shell over `SyncReplication.FolderModel`, which makes every session decision: events go in
/// under `lock`, directives come out and are carried out by `perform`. This file holds the
/// sessions, the directives and receiving manifests; FolderExchange+Serve.swift what we send and
/// serve, +Pull.swift chunk requests, +Swarm.swift what receivers of the same data give each other, +AntiEntropy.swift the digest timer, +Wire.swift the
/// conversions between model values and messages, PeerLink.swift a session's link.
final class FolderExchange: @unchecked Sendable {
    enum Outcome: Equatable {
        case reply([SessionMessage])
        /// Refuse and close the session; the reason is logged and told to the peer.
        case refuse(String)
    }

    struct Counters: Sendable {
        var needFiles = 0, needBytes: Int64 = 0, conflicts = 0, bytesIn: Int64 = 0, bytesOut: Int64 = 0, doneFiles = 0, doneBytes: Int64 = 0
        /// Chunk bytes received, as chunks (a deflated answer counts its `rawSize`; `bytesIn` what
        /// crossed the wire): the pull's progress.
        var chunkBytesIn: Int64 = 0
    }

    /// What `status` shows as `pullError`: why the last batch failed as a whole, and the paths
    /// whose change failed (retried until they apply or are superseded); nil when nothing fails.
    static func pullError(failing: [String: String], batchError: String?) -> String? {
        let paths = failing.keys.sorted().prefix(5).map { "\(RelativePath.display($0)): \(failing[$0]!)" }
        let all = (batchError.map { [$0] } ?? []) + paths + (failing.count > 5 ? ["and \(failing.count - 5) more paths"] : [])
        return all.isEmpty ? nil : all.joined(separator: "; ")
    }

    static let entriesPerManifest = 1000
    /// Chunks are deflated (on a session that agreed to it) only while at least this many bytes
    /// wait to be written to the peer's socket: the link, not this CPU, is then what bounds the
    /// transfer, so deflating costs no time and saves bytes. On a link faster than deflate
    /// (loopback, a fast LAN) nothing piles up and chunks go as they are (Protocol/wire.md,
    /// "Compression"). 1 MiB; `SYNCD_COMPRESSION_BACKLOG` (bytes) overrides it, 0 deflates always.
    let deflateBacklog: Int = ProcessInfo.processInfo.environment["SYNCD_COMPRESSION_BACKLOG"].flatMap { Int($0) }.map { max(0, $0) } ?? 1 << 20
    /// How long a chunk request may wait for its answer before the chunk is asked of the next peer
    /// (seconds). A session that goes silent is closed by its keepalive and fails its requests
    /// at once, so this only bounds a peer that is connected but slow.
    static let requestTimeout: TimeInterval = 10

    /// The session's smoothed round-trip time to a peer (from its keepalive), nil before the first pong.
    var rtt: (@Sendable (ShortDeviceID) -> Duration?)?
    /// Live members that gossip says hold this folder (set by the runtime): a big pull waits a
    /// moment for their sessions (`ChunkPull.Environment.announced`).
    var announcedPeers: (@Sendable () -> Set<ShortDeviceID>)?

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
    /// Applies the peers' batches (plan, pull, stage, place, record).
    let applier: FolderApplier

    let lock = Lock()
    /// Set by `stop`: the folder is no longer served (removed, or the daemon is shutting down), and why.
    var stopped = false
    var stopReason = FolderExchange.removedReason
    /// The folder's replication state (SyncReplication.FolderModel): every session decision is
    /// made there; this class carries its directives out.
    var model: FolderModel
    /// Sealed manifests being applied, by (origin, index id, last sequence): kept with the floor.
    var sealedInFlight: [[UInt64]: (bytes: [UInt8], firstSequence: UInt64)] = [:]
    var links: [ShortDeviceID: PeerLink] = [:]
    var pending: [UInt32: PendingRequest] = [:]
    /// Peers that let a request time out: left out of the pull's sources until then.
    var stalled: [ShortDeviceID: DispatchTime] = [:]
    static let stallPause = 10.0
    var nextRequest: UInt32 = 0
    var counters = Counters()
    /// Where sessions, applies, conflicts and errors are told (`DaemonEvents`); set by `FolderRuntime`.
    var events = FolderEvents.none
    /// Our latest digest (recomputed when the sequence moves).
    var digestCache: SessionMessage.Digest?
    var digestTimer: DispatchSourceTimer?
    let digestQueue: DispatchQueue
    let work: DispatchQueue
    let pushQueue: DispatchQueue
    /// The keyed ids of chunks of zeros (holes are neither fetched nor written).
    let zeros = ZeroChunks()
    /// Chunks our pulls staged (served from there) and announced, and peers' announcements.
    let swarm = SwarmBook()
    /// `syncd bench peer`: bench requests served, and runs against a peer (PeerBench.swift).
    let bench = PeerBench()

    init(record: FolderRecord, keys: FolderKeys, store: IndexStore, device: ShortDeviceID, logger: Logger,
         replication: DaemonConfiguration.Replication, placement: PlacementPolicy = .none) throws {
        self.record = record
        self.folder = POSIXFileSystem(root: record.path)
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
        let progress = try store.remoteManifestProgress(folder: record.id)
        model = FolderModel(me: device, indexID: indexID, access: Self.modelAccess(keys.access),
                            sequence: UInt64(max(try store.sequence(folder: record.id), 0)),
                            floors: progress.mapValues { ($0.indexID, $0.lastSequence) })
        work = DispatchQueue(label: "syncd.exchange.\(record.id)")
        pushQueue = DispatchQueue(label: "syncd.exchange.\(record.id).push")
        digestQueue = DispatchQueue(label: "syncd.exchange.\(record.id).digest")
        applier = FolderApplier(record: record, folder: folder, store: store, me: device, logger: self.logger,
                                replication: replication, placement: placement)
        applier.hooks = .init(
            count: { [weak self] c in
                guard let self else { return }
                lock.withLock {
                    counters.needFiles += c.needFiles; counters.needBytes += c.needBytes; counters.conflicts += c.conflicts
                    counters.bytesIn += c.bytesIn; counters.bytesOut += c.bytesOut
                    counters.doneFiles += c.doneFiles; counters.doneBytes += c.doneBytes
                }
            },
            holdDeletions: { [weak self] id, deleting, creating, live in
                guard let self else { return Self.removedReason }
                let accepted = applier.scanner.deletionsAccepted()
                return lock.withLock {
                    model.deletionsAccepted = accepted
                    return model.massDeletionHeld(id, deleting: deleting, creating: creating, liveHere: live)
                }
            },
            pull: { [weak self] announcer, syncEach in self?.chunkPull(announcer: announcer, syncEach: syncEach) })
        work.async { [self] in prunePieces() }
        startAntiEntropy()
    }

    var sessionPSK: [UInt8] { keys.sessionPSK }

    // MARK: sessions

    /// A session for this folder is up: remember it and say hello. A session that got this far
    /// after `stop` (accepted or dialled just before) is closed instead.
    func attach(_ link: PeerLink) {
        let sequence = UInt64(max((try? store.sequence(folder: record.id)) ?? 0, 0))
        let directives: [FolderModel.Directive]? = lock.withLock {
            if stopped { return nil }
            links[link.device.short] = link; stalled[link.device.short] = nil
            let moved = model.localIndexChanged(sequence: sequence, digest: nil)   // the hello says where we are
            return moved + model.sessionUp(link.device.short)
        }
        guard let directives else { link.close?(lock.withLock { stopReason }); return }
        events.peer(link.device.description, up: true)
        perform(directives)
    }

    /// A session ended: its requests fail now (the stagers ask other peers at once, instead of
    /// waiting out a timeout on a peer that is gone).
    func detach(_ link: PeerLink) {
        bench.ended(link)
        let orphaned: [PendingRequest] = lock.withLock {
            guard links[link.device.short] === link else { return [] }
            links[link.device.short] = nil
            events.peer(link.device.description, up: false)
            _ = model.sessionDown(link.device.short)
            sealedInFlight = sealedInFlight.filter { key, _ in
                model.isPending(.init(origin: key[0], indexID: key[1], firstSequence: 0, lastSequence: key[2], entries: []))
            }
            let gone = pending.filter { $0.value.peer == link.device.short }
            for id in gone.keys { pending[id] = nil }
            return Array(gone.values)
        }
        swarm.forget(link.device.short)
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
        // A session replaced by a newer one with the same peer: what it still delivers is not
        // about the session the model knows (pings are still answered while it closes).
        let current = lock.withLock { !stopped && links[link.device.short] === link }
        guard current else {
            if case .ping(let n) = message { return .reply([.pong(n)]) }
            return .reply([])
        }
        switch message {
        case .hello(let hello):
            let directives = lock.withLock {
                link.access = hello.access
                return model.received(.hello(access: Self.modelAccess(hello.access), indexID: hello.indexID, sequence: hello.sequence),
                                      from: link.device.short, now: .now)
            }
            if hello.access == .storage && keys.manifestKey != nil {
                // A storage peer relays other devices' manifests: say how far we hold each origin.
                let floors = lock.withLock { model.floors }
                for (origin, f) in floors.sorted(by: { $0.key < $1.key }) where origin != link.device.short {
                    link.send(.indexAck(origin: origin, indexID: f.indexID, sequence: f.sequence))
                }
            }
            perform(directives)
            return .reply([])
        case let .indexAck(origin, indexID, sequence):
            guard origin == me else {
                lock.withLock { link.floors[origin] = (indexID, sequence) }
                return .reply([])
            }
            if keys.manifestKey == nil { relayStoredManifests(to: link) }
            perform(lock.withLock { model.received(.indexAck(origin: origin, indexID: indexID, sequence: sequence), from: link.device.short, now: .now) })
            return .reply([])
        case .ping(let n):
            return .reply([.pong(n)])
        case .pong, .close:
            return .reply([])
        case .digest(let digest):
            perform(lock.withLock { model.received(.digest(Self.modelDigest(digest)), from: link.device.short, now: .now) })
            return .reply([])
        case .index(let bytes):
            return intake(bytes, from: link)
        case .store(let bytes):
            return keep(bytes)
        case .have(let ids):
            return received(have: ids, from: link)
        case let .request(id, chunk, size):
            return .reply([serve(id: id, chunk: chunk, size: size, deflate: link.deflate && link.backlog() >= deflateBacklog)])
        case let .data(id, bytes):
            complete(id, bytes, from: link.device.short)
            return .reply([])
        case let .dataDeflated(id, rawSize, bytes):
            // Inflated (bounded by the size we asked) off this thread, where the pull opens answers.
            complete(id, bytes, deflatedFrom: rawSize, from: link.device.short)
            return .reply([])
        case .requestFailed(let id, _):
            complete(id, nil, refusedByPeer: true, from: link.device.short)
            return .reply([])
        case let .benchRequest(id, size):
            return bench.serve(id: id, size: size, on: link)
        case let .benchData(id, bytes):
            return bench.answer(id: id, bytes: bytes.count, from: link)
        }
    }

    // MARK: sending our index

    /// Our index moved (a local change was recorded, or a peer's batch): every peer that holds
    /// less of it is sent the rest, as sealed manifests. Only a read-write secret seals: read-only
    /// peers never send their edits (status shows them).
    /// `localChanges`: the paths of local changes just recorded (they supersede failed changes).
    func indexMoved(localChanges: [String] = []) {
        guard let sequence = try? store.sequence(folder: record.id) else { return }
        perform(lock.withLock { model.localIndexChanged(sequence: UInt64(max(sequence, 0)), digest: nil, changed: localChanges) })
    }

    /// `.readIndex`: the entries after `after`, read here and handed back to the model, which
    /// makes the manifest (without what the peer gave us) — on `pushQueue`, one peer at a time.
    func readIndex(for peer: ShortDeviceID, after: UInt64, limit: Int) {
        pushQueue.async { [self] in
            guard let batch = try? store.entries(folder: record.id, after: Int64(after), limit: limit), !batch.isEmpty else { return }
            perform(lock.withLock { model.indexRead(for: peer, after: after, batch) })
        }
    }

    /// Carries out the model's directives (SyncReplication.FolderModel.Directive).
    func perform(_ directives: [FolderModel.Directive]) {
        var unrecorded: Set<ShortDeviceID> = []   // origins whose floor could not be recorded: no ack
        for directive in directives {
            switch directive {
            case let .send(peer, .indexAck(origin, _, _)) where unrecorded.contains(origin):
                let back = (try? store.remoteManifestProgress(folder: record.id))?[origin].map { ($0.indexID, $0.lastSequence) }
                perform(lock.withLock { model.floorNotRecorded(origin: origin, back: back, peer: peer) })
            case let .send(peer, .manifest(batch)):
                sendManifest(batch, to: peer)
            case let .send(peer, message):
                lock.withLock { links[peer] }?.send(Self.wire(message))
            case let .readIndex(peer, after, limit):
                readIndex(for: peer, after: after, limit: limit)
            case let .apply(id, peer, batch):
                work.async { [self] in runApply(id, from: peer, batch) }
            case let .recordFloor(origin, indexID, sequence):
                let key = [origin, indexID, sequence]
                do {
                    guard let sealed = lock.withLock({ sealedInFlight[key] }) else { throw PullError(description: "its sealed manifest is gone") }
                    try store.storeRemoteManifest(folder: record.id, origin: origin, indexID: indexID,
                                                  firstSequence: sealed.firstSequence, lastSequence: sequence, sealed: sealed.bytes)
                } catch {
                    logger.error("cannot record how far \(origin.deviceName)'s index is applied: \(error); it is sent again")
                    unrecorded.insert(origin)
                }
            case let .closeSession(peer, reason, after):
                guard let link = lock.withLock({ links[peer] }) else { continue }
                if after == .zero { link.close?(reason); continue }
                DispatchQueue.global().asyncAfter(deadline: .now() + Self.seconds(after)) { link.close?(reason) }
            }
        }
    }

    // MARK: receiving manifests

    /// A sealed manifest: verified by everyone (signature, paths), then admitted by the model
    /// (replay floor, a copy of a batch in flight) and applied one at a time; storage peers keep it.
    func intake(_ bytes: [UInt8], from link: PeerLink) -> Outcome {
        let manifest: SealedManifest
        do { manifest = try SealedManifest(decoding: bytes) } catch { return .refuse("malformed manifest: \(error)") }
        do { try manifest.verify(keys: manifestKeys) } catch { return .refuse("refused manifest: \(error)") }
        let header = manifest.header
        var entries: [FileEntry] = []
        if keys.manifestKey != nil {
            let listed: [ManifestEntry]
            do { listed = try manifest.open(keys: manifestKeys) } catch { return .refuse("refused manifest: \(error)") }
            if let bad = listed.map(\.entry).first(where: { RelativePath.validate($0.path) != nil || $0.path == ".syncd" || $0.path.hasPrefix(".syncd/") }) {
                return .refuse("refused manifest: invalid path \(bad.path.debugDescription)")
            }
            // Chunk lists sent as pieces are resolved when the batch is applied.
            entries = listed.map(\.entry)
        }
        let batch = FolderModel.Batch(origin: header.origin, indexID: header.indexID, firstSequence: header.firstSequence,
                                      lastSequence: header.lastSequence, entries: entries)
        let key = [header.origin, header.indexID, header.lastSequence]
        let directives: [FolderModel.Directive] = lock.withLock {
            let out = model.received(.manifest(batch), from: link.device.short, now: .now)
            if model.isPending(batch) { sealedInFlight[key] = (bytes, header.firstSequence) }
            counters.bytesIn += Int64(bytes.count)
            return out
        }
        // A refusal closes this session with its reason.
        for case let .closeSession(peer, reason, after) in directives where peer == link.device.short && after == .zero {
            return .refuse(reason)
        }
        perform(directives)
        return .reply([])
    }

    /// `.apply`: plans, fetches, stages and places the batch (FolderApplier) — or,
    /// on a storage peer, keeps the sealed manifest — then tells the model how it went.
    func runApply(_ id: FolderModel.BatchID, from peer: ShortDeviceID, _ batch: FolderModel.Batch) {
        let key = [batch.origin, batch.indexID, batch.lastSequence]
        let result: FolderModel.ApplyResult
        if keys.manifestKey == nil {
            result = .ok   // storage: keeping it is applying it (recordFloor stores the sealed bytes)
        } else if let link = lock.withLock({ links[peer] }), let sealed = lock.withLock({ sealedInFlight[key] }),
                  let listed = try? SealedManifest(decoding: sealed.bytes).open(keys: manifestKeys) {
            result = applier.apply(id, listed, origin: batch.origin, from: link.device)
        } else {
            result = .init(batchError: "the session with \(peer.deviceName) ended before its changes applied")
        }
        let directives = lock.withLock { model.applied(id, result, now: .now) }
        if let why = Self.pullError(failing: result.failed, batchError: result.batchError) { events.error(why) }
        perform(directives)
        lock.withLock { if !model.isPending(batch) { sealedInFlight[key] = nil } }
        if result.isOK { indexMoved() }   // pass them on to other peers (not back to this one)
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

    /// What `status` shows: the counters, why applies fail (nil when nothing does), and per peer
    /// what the model knows of its session.
    var snapshot: (counters: Counters, pullError: String?, peers: [PeerStatus]) {
        let fresh = currentDigest()   // compared as it is now, not as of the last still tick
        if let fresh { perform(lock.withLock { model.localIndexChanged(sequence: fresh.sequence, digest: Self.modelDigest(fresh)) }) }
        return lock.withLock {
            let peers = links.values.sorted { $0.device.short < $1.device.short }.map { link -> PeerStatus in
                let s = model.sessions[link.device.short]
                return PeerStatus(device: link.device.description, connected: true,
                                  acked: s.map { $0.ackedIndexID == indexID ? $0.acked : 0 } ?? 0,
                                  applied: model.applied(of: link.device.short),
                                  announced: s?.access == .readWrite ? s!.announced : 0,
                                  digest: model.digestState(link.device.short))
            }
            return (counters, Self.pullError(failing: model.failing, batchError: model.batchError), peers)
        }
    }
}
