import SyncCore

/// One folder's replication state as a pure state machine (Protocol/wire.md, "Replication",
/// "Anti-entropy"; the shape of `SWIMInstance` — ../shared/STYLE.md 1): every input is a
/// `mutating` call that returns the `Directive`s a shell carries out, time is passed in, and
/// nothing here does I/O. The shell owns the index, the files and the sockets; this owns what is
/// decided about them:
///
/// - per peer session: what the peer announced of its own index, how far it holds ours, what we
///   sent it, the versions it gave us (never echoed back), its anti-entropy digest;
/// - the applied prefix of every origin's index (the "floor"), raised only past batches that
///   applied completely — a failed change blocks acknowledging anything of its origin on that
///   session, which is closed after a backoff so the origin resends from the failed change
///   (retried until it applies or is superseded, never skipped);
/// - which batch applies next (one at a time, in arrival order), and the replay guard;
/// - the mass-deletion guard over a session's batches (`GlobalState.isMassDeletion`);
/// - when digests that stay different between caught-up peers call for a full resend;
/// - what `status` reports failing, and whether `wait` may say "in sync".
///
/// Planning a batch against local entries is `BatchPlan.make`; the shell calls it when it carries
/// out `.apply`. Chunk scheduling stays in the shell for now (Docs/Architecture.md).
public struct FolderModel: Sendable {
    public typealias Instant = ContinuousClock.Instant

    public struct Configuration: Sendable, Hashable {
        /// Entries per manifest (1,000): bounds one manifest's size and one apply pass.
        public var entriesPerManifest = 1000
        /// After a failed apply the session is closed after `retryBackoffBase` · 2ⁿ (0.5 s, n = failed
        /// applies of the origin in a row), at most `retryBackoffMax` (8 s).
        public var retryBackoffBase: Duration = .milliseconds(500)
        public var retryBackoffMax: Duration = .seconds(8)
        /// Digests may differ this long (2 s) between caught-up peers before a full resend…
        public var repairAfter: Duration = .seconds(2)
        /// …and a full resend with one peer happens at most this often (10 s).
        public var repairBackoff: Duration = .seconds(10)
        /// Mass-deletion thresholds (`GlobalState.Configuration`: 50 %, at least 10 entries).
        public var massDeletion = GlobalState.Configuration()
        public init() {}
    }

    /// What a peer may do in this folder (the hello's access byte).
    public enum Access: Hashable, Sendable { case readWrite, readOnly, storage }

    /// A batch of an origin's index: entries with sequences `firstSequence...lastSequence` (a
    /// sealed manifest on the wire). `entries` may be fewer than the sequences span: versions the
    /// receiver gave us are not sent back, the sequences still advance.
    public struct Batch: Hashable, Sendable {
        public var origin: ShortDeviceID
        public var indexID: UInt64
        public var firstSequence: UInt64
        public var lastSequence: UInt64
        public var entries: [FileEntry]
        public init(origin: ShortDeviceID, indexID: UInt64, firstSequence: UInt64, lastSequence: UInt64, entries: [FileEntry]) {
            self.origin = origin; self.indexID = indexID; self.firstSequence = firstSequence
            self.lastSequence = lastSequence; self.entries = entries
        }
    }

    /// A digest of the live (path, version) set (wire 0x12): equal digests between caught-up peers
    /// prove their indexes equal.
    public struct Digest: Hashable, Sendable {
        public var sequence: UInt64
        public var liveCount: UInt64
        public var hash: [UInt8]
        public init(sequence: UInt64, liveCount: UInt64, hash: [UInt8]) { self.sequence = sequence; self.liveCount = liveCount; self.hash = hash }
    }

    /// The replication messages (wire: hello 0x01, index 0x10, index-ack 0x11, digest 0x12).
    public enum Message: Hashable, Sendable {
        case hello(access: Access, indexID: UInt64, sequence: UInt64)
        case manifest(Batch)
        case indexAck(origin: ShortDeviceID, indexID: UInt64, sequence: UInt64)
        case digest(Digest)
    }

    public typealias BatchID = UInt64

    public enum Directive: Hashable, Sendable {
        case send(to: ShortDeviceID, Message)
        /// Read the local index after `sequence` (ascending, up to `limit` entries) and answer `indexRead`.
        case readIndex(peer: ShortDeviceID, after: UInt64, limit: Int)
        /// Plan (`BatchPlan.make` against the local entries as they are now), fetch, stage and
        /// place the batch, then answer `applied`. One apply at a time.
        case apply(BatchID, from: ShortDeviceID, Batch)
        /// The batch applied completely: persist the origin's new floor (with the sealed manifest)
        /// before the acknowledgement that follows goes out.
        case recordFloor(origin: ShortDeviceID, indexID: UInt64, sequence: UInt64)
        /// End the session after `after` (the dialer reconnects; the peer resends from our floor).
        case closeSession(ShortDeviceID, reason: String, after: Duration)
    }

    /// How an apply ended.
    public struct ApplyResult: Hashable, Sendable {
        /// Paths that did not apply, with the reason (retried).
        public var failed: [String: String]
        /// Why the batch failed as a whole (a full disk, chunk lists that did not come, a guard).
        public var batchError: String?
        /// Live paths the batch deleted and created (the mass-deletion guard counts a session's batches).
        public var deleted: Int
        public var created: Int

        public init(failed: [String: String] = [:], batchError: String? = nil, deleted: Int = 0, created: Int = 0) {
            self.failed = failed; self.batchError = batchError; self.deleted = deleted; self.created = created
        }
        public static let ok = ApplyResult()
        public var isOK: Bool { failed.isEmpty && batchError == nil }
    }

    /// The state of one session with a peer.
    public struct Session: Sendable {

        /// Which session with the peer this is (each `sessionUp` makes a new one).
        public var epoch: UInt64 = 0
        public var access: Access?
        /// The peer's index id and the highest sequence of its own index it announced.
        public var indexID: UInt64 = 0
        public var announced: UInt64 = 0
        /// How far the peer holds our index (its index-ack of our origin), and under which index id.
        public var acked: UInt64 = 0
        public var ackedIndexID: UInt64 = 0
        /// The last sequence of ours sent; nil until the peer said where to start.
        public var lastSent: UInt64?
        /// Versions this peer gave us and we applied (path → vector): not sent back.
        public var received: [String: VersionVector] = [:]
        public var theirDigest: Digest?
        public var sentDigest: Digest?
        public var digestDifferSince: Instant?
        /// We asked for the peer's whole index (anti-entropy): its batches below our floor are
        /// expected on this session, applied again, not taken for replays.
        public var resending = false
        /// Origins a change of which failed on this session: nothing of theirs is acknowledged until redialled.
        public var failedOrigins: Set<ShortDeviceID> = []
        /// Live paths deleted by this session's batches (the mass-deletion guard counts them together).
        public var deleted = 0
    }

    struct Queued: Hashable, Sendable {
        var id: BatchID
        var peer: ShortDeviceID
        /// The session that delivered it (or, resent there, the one that took it over).
        var epoch: UInt64
        var batch: Batch
        var resend: Bool
    }

    public let me: ShortDeviceID
    public let indexID: UInt64
    public let access: Access
    public let configuration: Configuration
    /// The highest sequence of our own index.
    public private(set) var sequence: UInt64
    /// Our current digest (set by the shell with the sequence), nil when not computed.
    public private(set) var digest: Digest?
    /// How far each origin's index is applied here (origin → index id and last sequence).
    public private(set) var floors: [ShortDeviceID: (indexID: UInt64, sequence: UInt64)]
    public private(set) var sessions: [ShortDeviceID: Session] = [:]
    /// Paths whose change failed, with the reason; and why the last batch failed as a whole.
    public private(set) var failing: [String: String] = [:]
    public private(set) var batchError: String?
    /// Whether a user confirmed that large deletions from peers may apply (`syncd accept-deletions`).
    public var deletionsAccepted = false

    /// Per peer, across sessions: its last digest, and its own batches applied since (last
    /// sequence, deletions net of creations) — the mass-deletion guard's estimate of what the
    /// peer holds is the digest's live count less what it deleted after the digest was taken.
    var lastDigest: [ShortDeviceID: Digest] = [:]
    var appliedNet: [ShortDeviceID: [(lastSequence: UInt64, net: Int)]] = [:]

    var queue: [Queued] = []
    var applying: Queued?
    var nextBatch: BatchID = 1
    var nextEpoch: UInt64 = 1
    var retryAttempts: [ShortDeviceID: Int] = [:]
    var lastRepair: [ShortDeviceID: Instant] = [:]

    /// `floors`: what the index says is applied of each origin (persisted by `.recordFloor`).
    public init(me: ShortDeviceID, indexID: UInt64, access: Access = .readWrite, sequence: UInt64,
                floors: [ShortDeviceID: (indexID: UInt64, sequence: UInt64)] = [:], configuration: Configuration = Configuration()) {
        self.me = me; self.indexID = indexID; self.access = access; self.sequence = sequence
        self.floors = floors; self.configuration = configuration
    }

    // MARK: queries

    /// How far we hold `peer`'s own index (0 when its index id changed).
    public func applied(of peer: ShortDeviceID) -> UInt64 {
        guard let s = sessions[peer], let f = floors[peer], f.indexID == s.indexID else { return 0 }
        return f.sequence
    }

    /// Whether anything is queued or applying.
    public var isApplying: Bool { applying != nil || !queue.isEmpty }

    /// The entries of the batches queued behind the one applying, and the bytes of those that
    /// are not deletions: the rest of the pending set, for `status`'s progress.
    public var queuedWork: (files: Int, bytes: Int64) {
        queue.reduce((0, 0)) { sum, q in
            (sum.0 + q.batch.entries.count, sum.1 + q.batch.entries.reduce(0) { $0 + ($1.deleted ? 0 : $1.metadata.size) })
        }
    }

    /// Whether a batch with `batch`'s origin, index id and last sequence is queued or applying
    /// (delivered by `peer`, when given).
    public func isPending(_ batch: Batch, from peer: ShortDeviceID? = nil) -> Bool {
        (queue + (applying.map { [$0] } ?? [])).contains {
            $0.batch.origin == batch.origin && $0.batch.indexID == batch.indexID && $0.batch.lastSequence == batch.lastSequence
                && (peer == nil || $0.peer == peer)
        }
    }

    /// Whether digests with `peer` can be compared (both read-write).
    public func comparesDigests(with peer: ShortDeviceID) -> Bool {
        access == .readWrite && sessions[peer]?.access == .readWrite
    }

    /// "agree", "differ", "pending" or "n/a", as `status` shows per peer.
    public func digestState(_ peer: ShortDeviceID) -> String {
        guard comparesDigests(with: peer) else { return "n/a" }
        guard let ours = digest, let theirs = sessions[peer]?.theirDigest else { return "pending" }
        return ours.hash == theirs.hash ? "agree" : "differ"
    }

    /// What `syncd wait` requires of the folder: nothing failing or applying, every connected
    /// read-write peer's announced index applied here, ours acknowledged by it, and equal digests.
    /// `peers`: the devices that must be connected (gossip's live members of the folder).
    public func isInSync(with peers: Set<ShortDeviceID>) -> Bool {
        guard failing.isEmpty, batchError == nil, !isApplying else { return false }
        for peer in peers {
            guard let s = sessions[peer], let access = s.access, s.lastSent != nil else { return false }
            if access == .readWrite {
                guard applied(of: peer) >= s.announced else { return false }
            }
            guard s.ackedIndexID == indexID, s.acked >= sequence else { return false }
            if comparesDigests(with: peer) && digestState(peer) != "agree" { return false }
        }
        return true
    }

    // MARK: sessions

    /// A session with `peer` is up: say hello.
    public mutating func sessionUp(_ peer: ShortDeviceID) -> [Directive] {
        sessions[peer] = Session(epoch: nextEpoch)
        nextEpoch += 1
        return [.send(to: peer, .hello(access: access, indexID: indexID, sequence: sequence))]
    }

    /// The session ended: batches of the peer not yet applying are dropped (it resends them from
    /// our floor when it reconnects).
    public mutating func sessionDown(_ peer: ShortDeviceID) -> [Directive] {
        sessions[peer] = nil
        queue.removeAll { $0.peer == peer }
        return []
    }

    /// A message from `peer`.
    public mutating func received(_ message: Message, from peer: ShortDeviceID, now: Instant) -> [Directive] {
        guard sessions[peer] != nil else { return [] }
        switch message {
        case let .hello(access, indexID, sequence):
            sessions[peer]!.access = access
            sessions[peer]!.indexID = indexID
            sessions[peer]!.announced = sequence
            let held = floors[peer].map { $0.indexID == indexID ? $0.sequence : 0 } ?? 0
            return [.send(to: peer, .indexAck(origin: peer, indexID: indexID, sequence: held))]
        case let .indexAck(origin, indexID, sequence):
            guard origin == me else { return [] }
            let matches = indexID == self.indexID
            sessions[peer]!.ackedIndexID = indexID
            sessions[peer]!.acked = matches ? sequence : 0
            guard sessions[peer]!.lastSent != nil else {
                sessions[peer]!.lastSent = matches ? sequence : 0
                return readIndexIfBehind(peer)
            }
            // An acknowledgement of 0 once sending started: the peer's digest differs from ours
            // and it asks for our whole index (Protocol/wire.md, "Anti-entropy"). Resend it, and
            // ask for the peer's in turn unless we asked already: both directions are repaired.
            guard matches && sequence == 0 else { return [] }
            sessions[peer]!.lastSent = 0
            sessions[peer]!.received = [:]   // all of it: what it gave us may be what it lost
            var out = readIndexIfBehind(peer)
            if !sessions[peer]!.resending && access == .readWrite && sessions[peer]!.access == .readWrite {
                sessions[peer]!.resending = true
                out.append(.send(to: peer, .indexAck(origin: peer, indexID: sessions[peer]!.indexID, sequence: 0)))
            }
            return out
        case .digest(let d):
            sessions[peer]!.theirDigest = d
            lastDigest[peer] = d
            appliedNet[peer] = appliedNet[peer]?.filter { $0.lastSequence > d.sequence }
            sessions[peer]!.announced = max(sessions[peer]!.announced, d.sequence)
            return []
        case .manifest(let batch):
            return intake(batch, from: peer)
        }
    }

    mutating func intake(_ batch: Batch, from peer: ShortDeviceID) -> [Directive] {
        // Only what the origin itself signs counts (in the shell: the manifest signature); a
        // read-only device never sends, and a storage device only relays others' batches.
        let floor = floors[batch.origin].map { $0.indexID == batch.indexID ? $0.sequence : 0 } ?? 0
        let epoch = sessions[peer]!.epoch
        // This very batch from this peer, applying or queued.
        let copyApplying = applying.map { $0.peer == peer && $0.batch == batch } ?? false
        let copyQueued = queue.contains { $0.peer == peer && $0.batch == batch }
        var resend = false
        if batch.lastSequence <= floor {
            if sessions[peer]!.resending && batch.origin == peer && !copyApplying && !copyQueued {
                resend = true   // the full resend we asked for: applied again, the floor stays
            } else if sessions[peer]!.access == .storage && batch.origin != peer {
                return []       // a storage peer relaying what we already got from the writer
            } else {
                return [.closeSession(peer, reason: "refused manifest: replayed or older than what we hold (origin \(String(batch.origin, radix: 16)) sequence \(batch.lastSequence) ≤ \(floor))", after: .zero)]
            }
        } else if copyApplying && applying!.epoch != epoch {
            // Resent on a new session while the old session's copy applies: applied once, and
            // judged and acknowledged on this session. (A batch that differs — more entries, from
            // an earlier floor — is queued like any other.)
            applying!.epoch = epoch
            return []
        } else if copyApplying || copyQueued {
            return [.closeSession(peer, reason: "refused manifest: a copy of a batch this session already delivered", after: .zero)]
        }
        if batch.origin == peer { sessions[peer]!.announced = max(sessions[peer]!.announced, batch.lastSequence) }
        queue.append(Queued(id: nextBatch, peer: peer, epoch: sessions[peer]!.epoch, batch: batch, resend: resend))
        nextBatch += 1
        return startNext()
    }

    mutating func startNext() -> [Directive] {
        guard applying == nil, !queue.isEmpty else { return [] }
        let next = queue.removeFirst()
        applying = next
        return [.apply(next.id, from: next.peer, next.batch)]
    }

    /// Before placing a batch's steps: whether the receiver's mass-deletion guard holds it (a peer
    /// whose disk vanished must not empty every replica). Deletions of a session's batches count
    /// together against what we held before them; the peer's live count is its last digest less
    /// what it deleted since. Returns the reason to report when held; nil lets the batch apply.
    /// `liveHere`: live entries in our index now.
    public func massDeletionHeld(_ id: BatchID, deleting: Int, creating: Int, liveHere: Int) -> String? {
        guard let current = applying, current.id == id, deleting > 0, !deletionsAccepted else { return nil }
        guard let s = sessions[current.peer], s.epoch == current.epoch else {
            return "held: the session with \(String(current.peer, radix: 16)) ended before its deletions applied; they wait for it"
        }
        let total = s.deleted + deleting
        guard total >= configuration.massDeletion.massDeletionMinimum else { return nil }
        let live = liveHere + s.deleted
        let remoteLive = current.peer == current.batch.origin
            ? remoteLive(current.peer, plus: current.batch.lastSequence, net: deleting - creating) : 0
        guard GlobalState.isMassDeletion(wouldDelete: total, liveLocal: live, remoteLive: remoteLive, configuration.massDeletion) else { return nil }
        return "held: \(String(current.peer, radix: 16)) would delete \(total) of the \(live) files and directories here (it holds about \(remoteLive))"
    }

    /// What `peer` holds live, as its last digest says less what its batches applied since (and
    /// this one, ending at `lastSequence`) deleted net of creations; 0 when it never sent a digest.
    func remoteLive(_ peer: ShortDeviceID, plus lastSequence: UInt64, net: Int) -> Int {
        guard let d = lastDigest[peer] else { return 0 }
        let since = (appliedNet[peer] ?? []).reduce(0) { $0 + ($1.lastSequence > d.sequence ? $1.net : 0) }
        return max(0, Int(d.liveCount) - since - (lastSequence > d.sequence ? net : 0))
    }

    /// The apply of batch `id` ended.
    public mutating func applied(_ id: BatchID, _ result: ApplyResult, now: Instant) -> [Directive] {
        guard let done = applying, done.id == id else { return [] }
        applying = nil
        var out: [Directive] = []
        let batch = done.batch, peer = done.peer
        batchError = result.batchError
        if result.batchError == nil {
            for e in batch.entries { failing[e.path] = nil }
        }
        for (path, reason) in result.failed { failing[path] = reason }
        // Judged on the session that delivered the batch (or took it over when resent): one that
        // ended since tells nothing — the peer resends from our floor on its next session.
        let delivering = sessions[peer].flatMap { $0.epoch == done.epoch ? $0 : nil }
        if delivering != nil {
            sessions[peer]!.deleted += result.deleted
            if batch.origin == peer { appliedNet[peer, default: []].append((batch.lastSequence, result.deleted - result.created)) }
        }
        let blocked = delivering?.failedOrigins.contains(batch.origin) ?? true
        if result.isOK && !blocked {
            if !done.resend {
                let old = floors[batch.origin]
                if old == nil || old!.indexID != batch.indexID || old!.sequence < batch.lastSequence {
                    floors[batch.origin] = (batch.indexID, batch.lastSequence)
                    out.append(.recordFloor(origin: batch.origin, indexID: batch.indexID, sequence: batch.lastSequence))
                }
            }
            retryAttempts[batch.origin] = nil
            for e in batch.entries { sessions[peer]!.received[e.path] = e.version }
            out.append(.send(to: peer, .indexAck(origin: batch.origin, indexID: batch.indexID, sequence: batch.lastSequence)))
        } else if !result.isOK, sessions[peer] != nil, sessions[peer]!.failedOrigins.insert(batch.origin).inserted {
            // Start over after a backoff: the peer resends its entries from our floor. (Also when
            // the delivering session ended and another is up: its later batches must not be
            // recorded past this failure either.)
            let attempt = retryAttempts[batch.origin, default: 0]
            retryAttempts[batch.origin] = attempt + 1
            let delay = min(configuration.retryBackoffMax, configuration.retryBackoffBase * (1 << min(attempt, 10)))
            out.append(.closeSession(peer, reason: "resynchronizing after a failed apply", after: delay))
        }
        return out + startNext()
    }

    // MARK: sending our index

    /// Recording `.recordFloor` failed (the index could not be written): the floor goes back to
    /// what the index holds, and the session with `peer` is closed so the origin resends.
    public mutating func floorNotRecorded(origin: ShortDeviceID, back to: (indexID: UInt64, sequence: UInt64)?, peer: ShortDeviceID) -> [Directive] {
        floors[origin] = to
        return [.closeSession(peer, reason: "cannot record what was applied; resynchronizing", after: .zero)]
    }

    /// Our index moved (a local change was indexed, or a batch from a peer was recorded).
    /// `changed`: paths of local changes just recorded — a peer's change of such a path that
    /// failed is superseded here (not failing any more; its origin still resends it, unacknowledged,
    /// and it resolves against the local version like any concurrent change).
    public mutating func localIndexChanged(sequence: UInt64, digest: Digest?, changed: [String] = []) -> [Directive] {
        self.sequence = max(self.sequence, sequence)
        for path in changed { failing[path] = nil }
        if let digest { self.digest = digest }
        return sessions.keys.sorted().flatMap { readIndexIfBehind($0) }
    }

    mutating func readIndexIfBehind(_ peer: ShortDeviceID) -> [Directive] {
        guard access == .readWrite, let s = sessions[peer], let sent = s.lastSent, sent < sequence else { return [] }
        return [.readIndex(peer: peer, after: sent, limit: configuration.entriesPerManifest)]
    }

    /// The entries of our index after `after` (ascending sequences), as read for `.readIndex`:
    /// one manifest, without the versions the peer gave us. A read that started from what is no
    /// longer the last sequence sent (two reads crossed) is dropped and asked again.
    public mutating func indexRead(for peer: ShortDeviceID, after: UInt64, _ entries: [FileEntry]) -> [Directive] {
        guard let s = sessions[peer], let sent = s.lastSent else { return [] }
        guard sent == after else { return readIndexIfBehind(peer) }
        guard let first = entries.first, let last = entries.last, UInt64(max(last.sequence, 0)) > sent else { return [] }
        var received = s.received
        let listed = entries.filter { e in
            guard let v = received[e.path], v == e.version else { return true }
            received[e.path] = nil
            return false
        }
        sessions[peer]!.received = received
        sessions[peer]!.lastSent = UInt64(last.sequence)
        let batch = Batch(origin: me, indexID: indexID, firstSequence: UInt64(max(first.sequence, 0)),
                          lastSequence: UInt64(last.sequence), entries: listed)
        return [.send(to: peer, .manifest(batch))] + readIndexIfBehind(peer)
    }

    // MARK: anti-entropy

    /// The periodic tick (every 0.25 s): while nothing moves here (`still`: no scan or apply under
    /// way), tell each comparable peer our digest when it changed, and ask for a full resend when
    /// digests have differed for `repairAfter` while both sides hold each other's whole index.
    public mutating func tick(now: Instant, still: Bool) -> [Directive] {
        guard still, !isApplying, let ours = digest else { return [] }
        var out: [Directive] = []
        for peer in sessions.keys.sorted() where comparesDigests(with: peer) && sessions[peer]!.lastSent != nil {
            if sessions[peer]!.sentDigest != ours {
                sessions[peer]!.sentDigest = ours
                out.append(.send(to: peer, .digest(ours)))
            }
            let s = sessions[peer]!
            guard let theirs = s.theirDigest, theirs.hash != ours.hash else { sessions[peer]!.digestDifferSince = nil; continue }
            let caughtUp = applied(of: peer) >= theirs.sequence && s.ackedIndexID == indexID && s.acked >= ours.sequence
            guard caughtUp else { sessions[peer]!.digestDifferSince = nil; continue }
            guard let since = s.digestDifferSince else { sessions[peer]!.digestDifferSince = now; continue }
            guard since.duration(to: now) >= configuration.repairAfter else { continue }
            if let last = lastRepair[peer], last.duration(to: now) < configuration.repairBackoff { continue }
            lastRepair[peer] = now
            // Ask for the peer's whole index with an acknowledgement of 0; it resends, and asks
            // for ours in turn. Its resent batches are below our floor: expected, not replays.
            sessions[peer]!.resending = true
            sessions[peer]!.digestDifferSince = nil
            out.append(.send(to: peer, .indexAck(origin: peer, indexID: s.indexID, sequence: 0)))
        }
        return out
    }
}
