import SyncCore

/// Plans how the chunks of needed files reach this device: a pure state machine (no I/O, no clock;
/// time and the tie-breaking seed are injected). Every input returns the directives the shell
/// carries out, in order.
///
/// - A chunk available here (the local chunk index, or one already received) is copied, never
///   fetched: renames and moves cost no transfer.
/// - Every other chunk is requested once, however many files or offsets need it, from one of the
///   connected peers that can serve it: least-loaded first, ties broken by the seeded generator.
/// - Swarm (Protocol/wire.md, "Swarm"): peers that announced a chunk (`peerAnnounced`, from their
///   `have` messages) are asked for it before peers that merely may have it, and once any peer
///   has announced chunks, a peer asked on speculation (the writer, say) gets at most
///   `speculativeWindow` such requests: receivers of the same new data trade what they already hold
///   and the writer uploads each chunk about once. Chunks are taken in runs of `shuffleRun`
///   (seeded order), so receivers start on different parts of the data (BitTorrent's random first
///   piece, Cohen 2003 §4.1).
/// - At most `window` requests are outstanding per peer and `maxOutstandingBytes` in all
///   (one request may always be outstanding, so a chunk larger than the budget still moves).
/// - A chunk no connected peer has is parked: its files show in `pending` and nothing is retried
///   until a peer connects that has it, so the planner never spins.
/// - A failed or timed-out request is retried on another peer when one has the chunk (the same
///   peer again only when no other can serve it); after `maxAttempts` failures of one chunk the
///   files that need it fail.
/// - A file completes when every one of its chunk placements has been confirmed by `copied`.
public struct PullPlanner: Sendable {
    public typealias Instant = ContinuousClock.Instant
    public typealias RequestID = UInt64

    public struct Configuration: Sendable, Hashable {
        /// Outstanding requests per peer (16): enough to fill a LAN link with 64 KiB chunks.
        public var window: Int
        /// Bytes requested and not yet answered, over all peers (32 MiB): bounds memory for
        /// chunks in flight.
        public var maxOutstandingBytes: Int
        /// A request unanswered this long (30 s) is given up and retried elsewhere.
        public var requestTimeout: Duration
        /// Failed requests (refused or timed out) for one chunk, and failed copies into one file,
        /// before the files concerned fail (5).
        public var maxAttempts: Int
        /// Outstanding requests per peer for chunks it did not announce, once some peer has announced
        /// chunks in this pull (the writer's share in a swarm; `window` by default: no limit).
        public var speculativeWindow: Int
        /// Chunks are queued in runs of this many, the runs in seeded random order (0: in file order).
        public var shuffleRun: Int

        public init(window: Int = 16, maxOutstandingBytes: Int = 32 << 20, requestTimeout: Duration = .seconds(30),
                    maxAttempts: Int = 5, speculativeWindow: Int? = nil, shuffleRun: Int = 0) {
            precondition(window > 0 && maxOutstandingBytes > 0 && maxAttempts > 0 && shuffleRun >= 0)
            self.window = window
            self.maxOutstandingBytes = maxOutstandingBytes
            self.requestTimeout = requestTimeout
            self.maxAttempts = maxAttempts
            self.speculativeWindow = min(window, max(1, speculativeWindow ?? window))
            self.shuffleRun = shuffleRun
        }
    }

    public struct FileToFetch: Hashable, Sendable {
        public var path: String
        public var chunks: [ChunkRef]
        public init(path: String, chunks: [ChunkRef]) { self.path = path; self.chunks = chunks }
    }

    /// Which chunks a peer can serve.
    public enum Inventory: Hashable, Sendable {
        /// These (and what it announces later).
        case chunks(Set<ChunkID>)
        /// Anything asked (the peer that announced the batch): a refusal teaches otherwise for
        /// that chunk only.
        case everything
        /// Probably anything (a peer that may be up to date, or may be behind): asked like
        /// `.everything` until its first refusal, from then on only for what it announces.
        case likely

        /// The chunks of every live file entry the peer announced.
        public static func announced(_ entries: [FileEntry]) -> Inventory {
            .chunks(Set(entries.lazy.filter { !$0.deleted }.flatMap { $0.chunks.map(\.id) }))
        }

        public func contains(_ id: ChunkID) -> Bool {
            switch self {
            case .everything, .likely: return true
            case .chunks(let set): return set.contains(id)
            }
        }
    }

    public enum Directive: Hashable, Sendable {
        /// The chunk's bytes are on this device (the local chunk index, or just received for the
        /// request the answering call acknowledged): verify, write them at `offset`, answer `copied`.
        case copyLocal(ChunkRef, toPath: String, offset: Int64)
        /// Ask `peer` for the chunk; answer `received`.
        case request(peer: ShortDeviceID, chunk: ChunkRef, requestID: RequestID)
        /// Every chunk of the file is in place.
        case fileComplete(path: String)
        /// The file cannot be completed; it is forgotten.
        case fileFailed(path: String, reason: Failure)
    }

    public enum Failure: Error, Hashable, Sendable {
        /// Every request for the chunk failed, `attempts` times in all.
        case chunkUnavailable(ChunkID, attempts: Int)
        /// Writing the file's chunks failed `attempts` times.
        case copyFailed(ChunkID, attempts: Int)
    }

    /// A file waiting for chunks no connected peer has.
    public struct PendingFile: Hashable, Sendable {
        public var path: String
        public var missing: [ChunkID]
    }

    public let configuration: Configuration

    struct Placement: Hashable, Sendable {
        var path: String
        var offset: Int64
    }

    enum Status: Hashable, Sendable {
        case queued, parked, inFlight(RequestID)
    }

    /// A chunk still to be fetched.
    struct ChunkState: Sendable {
        var ref: ChunkRef
        var waiting: [Placement]
        var status: Status = .queued
        /// Peers that failed this chunk; skipped while another peer can serve it.
        var excluded: Set<ShortDeviceID> = []
        /// Peers that answered they do not have it: never asked for it again in this pull.
        var notHeldBy: Set<ShortDeviceID> = []
        var attempts = 0

        var isInFlight: Bool { if case .inFlight = status { true } else { false } }
    }

    struct FileState: Sendable {
        var chunks: [ChunkRef]
        var remaining: Int
        var copying: Set<Int64> = []
        var copyFailures = 0
    }

    struct Request: Sendable {
        var chunk: ChunkID
        var peer: ShortDeviceID
        var sentAt: Instant
        var bytes: Int
    }

    struct Peer: Sendable {
        enum Kind: Sendable { case everything, likely, known }
        var kind: Kind
        /// Chunks it is known to hold: its `.chunks` inventory and what it announced.
        var known: Set<ChunkID>
        /// Known chunks still queued here, oldest first, from `offerHead` (stale entries skipped).
        var offers: [ChunkID] = []
        var offerHead = 0
        var outstanding = 0

        init(_ inventory: Inventory) {
            switch inventory {
            case .everything: kind = .everything; known = []
            case .likely: kind = .likely; known = []
            case .chunks(let set): kind = .known; known = set
            }
        }

        /// Asked for chunks it did not announce.
        var isSpeculative: Bool { kind != .known }

        func holds(_ id: ChunkID) -> Bool { kind != .known || known.contains(id) }
    }

    private var files: [String: FileState] = [:]
    private var chunks: [ChunkID: ChunkState] = [:]
    /// Chunks whose bytes are here: copied, not fetched.
    private var available: Set<ChunkID>
    private var requests: [RequestID: Request] = [:]
    private var peers: [ShortDeviceID: Peer] = [:]
    /// Fetch order: `retry` (chunks that went back, oldest need first) before `queue[head...]`.
    /// Entries whose chunk is no longer queued are skipped, so neither list is ever searched.
    private var queue: [ChunkID] = []
    private var head = 0
    private var retry: [ChunkID] = []
    private var parked: [ChunkID] = []
    private var outstandingBytes = 0
    private var nextRequestID: RequestID = 1
    private var random: SplitMix64
    /// Some peer announced chunks in this pull: speculative requests are held to `speculativeWindow`.
    private var swarming = false

    /// `localChunks`: every chunk id the local index holds in some file.
    public init(configuration: Configuration = Configuration(), localChunks: Set<ChunkID> = [], seed: UInt64) {
        self.configuration = configuration
        self.available = localChunks
        self.random = SplitMix64(seed: seed)
    }

    // MARK: queries

    /// Files waiting for chunks no connected peer has, by path.
    public var pending: [PendingFile] {
        var missing: [String: Set<ChunkID>] = [:]
        for (id, chunk) in chunks where !chunk.isInFlight {
            guard !peers.values.contains(where: { $0.holds(id) }) else { continue }
            for placement in chunk.waiting { missing[placement.path, default: []].insert(id) }
        }
        return missing.keys.sorted().map { PendingFile(path: $0, missing: missing[$0]!.sorted()) }
    }

    public var isFinished: Bool { files.isEmpty }
    public var outstandingRequests: Int { requests.count }
    public var outstandingRequestBytes: Int { outstandingBytes }
    public func outstandingRequests(to peer: ShortDeviceID) -> Int { peers[peer]?.outstanding ?? 0 }

    // MARK: inputs

    /// Starts fetching `files`. A path already in progress is restarted with the new chunk list.
    public mutating func add(_ files: [FileToFetch], now: Instant) -> [Directive] {
        var out: [Directive] = []
        let queued = queue.count
        for file in files {
            cancel(file.path)
            guard !file.chunks.isEmpty else {
                out.append(.fileComplete(path: file.path))
                continue
            }
            self.files[file.path] = FileState(chunks: file.chunks, remaining: file.chunks.count)
            var offset: Int64 = 0
            for ref in file.chunks {
                out += need(ref, at: Placement(path: file.path, offset: offset))
                offset += Int64(ref.size)
            }
        }
        shuffleRuns(from: queued)
        return out + schedule(now: now)
    }

    /// Stops fetching `path` (a newer version superseded it, or it is no longer needed). Answers to
    /// its requests and copies that arrive later are ignored.
    public mutating func cancel(_ path: String) {
        guard let file = files.removeValue(forKey: path) else { return }
        var seen = Set<ChunkID>()
        for ref in file.chunks where seen.insert(ref.id).inserted {
            guard var chunk = chunks[ref.id] else { continue }
            chunk.waiting.removeAll { $0.path == path }
            if !chunk.waiting.isEmpty {
                chunks[ref.id] = chunk
                continue
            }
            if case .inFlight(let id) = chunk.status, let request = requests.removeValue(forKey: id) {
                release(request)
            }
            chunks[ref.id] = nil
        }
    }

    /// A peer connected, or announced a new inventory. Parked chunks it has are queued again, and
    /// a new connection gets a fresh chance at chunks it failed before.
    public mutating func peerConnected(_ peer: ShortDeviceID, inventory: Inventory, now: Instant) -> [Directive] {
        if peers[peer] == nil {
            for id in chunks.keys where chunks[id]!.excluded.contains(peer) || chunks[id]!.notHeldBy.contains(peer) {
                chunks[id]!.excluded.remove(peer)
                chunks[id]!.notHeldBy.remove(peer)   // it may hold it now
            }
        }
        let announced = peers[peer]?.known ?? []
        var state = Peer(inventory)
        state.known.formUnion(announced)
        state.outstanding = peers[peer]?.outstanding ?? 0
        peers[peer] = state
        offer(state.known.sorted(), by: peer)
        var stillParked: [ChunkID] = []
        for id in parked where chunks[id]?.status == .parked {
            if state.isSpeculative {
                chunks[id]!.status = .queued
                retry.append(id)
            } else {
                stillParked.append(id)
            }
        }
        parked = stillParked
        return schedule(now: now)
    }

    /// `peer` announced that it now holds `ids` (a `have` message: chunks it received in its own
    /// pull). It is asked for them before peers that merely may have them, a refusal of them it
    /// made earlier is forgotten, and from now on speculative requests are held to
    /// `speculativeWindow` per peer. Unknown peers are ignored.
    public mutating func peerAnnounced(_ peer: ShortDeviceID, chunks ids: [ChunkID], now: Instant) -> [Directive] {
        guard peers[peer] != nil else { return [] }
        var new: [ChunkID] = []
        for id in ids where peers[peer]!.known.insert(id).inserted { new.append(id) }
        guard !new.isEmpty else { return [] }
        swarming = true
        offer(new, by: peer)
        return schedule(now: now)
    }

    /// The peer is gone: its outstanding requests go to other peers, without counting as failures.
    public mutating func peerDisconnected(_ peer: ShortDeviceID, now: Instant) -> [Directive] {
        guard peers.removeValue(forKey: peer) != nil else { return [] }
        for id in requests.keys.sorted() where requests[id]!.peer == peer {
            let request = requests.removeValue(forKey: id)!
            outstandingBytes -= request.bytes
            if chunks[request.chunk] != nil { requeue(request.chunk) }
        }
        return schedule(now: now)
    }

    /// The answer to a request: `ok` when the bytes arrived and verified against the chunk id.
    /// Unknown ids (answered after a timeout, or cancelled) return nothing: drop the bytes.
    public mutating func received(_ requestID: RequestID, ok: Bool, now: Instant) -> [Directive] {
        guard let request = requests.removeValue(forKey: requestID) else { return [] }
        release(request)
        var out: [Directive] = []
        if chunks[request.chunk] != nil {
            if ok {
                let chunk = chunks.removeValue(forKey: request.chunk)!
                available.insert(request.chunk)
                out += chunk.waiting.map { copy(chunk.ref, to: $0) }
            } else {
                out += failed(request.chunk, by: request.peer)
            }
        }
        return out + schedule(now: now)
    }

    /// The answer to `copyLocal`. A failed copy means the bytes are not here after all (the local
    /// file changed since it was indexed: `localMiss`, not counted) or could not be written
    /// (counted: `maxAttempts` write failures fail the file): the chunk is fetched instead.
    public mutating func copied(_ chunk: ChunkRef, toPath path: String, offset: Int64, ok: Bool,
                                localMiss: Bool = false, now: Instant) -> [Directive] {
        guard var file = files[path], file.copying.remove(offset) != nil else { return [] }
        if ok {
            file.remaining -= 1
            files[path] = file.remaining == 0 ? nil : file
            return file.remaining == 0 ? [.fileComplete(path: path)] : []
        }
        if !localMiss { file.copyFailures += 1 }
        files[path] = file
        if file.copyFailures >= configuration.maxAttempts {
            cancel(path)
            return [.fileFailed(path: path, reason: .copyFailed(chunk.id, attempts: file.copyFailures))]
        }
        available.remove(chunk.id)
        return need(chunk, at: Placement(path: path, offset: offset)) + schedule(now: now)
    }

    /// The peer answered that it does not have the chunk: it is not asked for that chunk again in
    /// this pull unless it announces it (a `.likely` peer is from then on asked only for what it
    /// announces), and the answer is no failed attempt while another connected peer may have it
    /// (a peer that is behind refuses at once; counting that would fail chunks the announcing peer
    /// serves). When every connected holder has refused, the chunk's files fail.
    public mutating func notHeld(_ requestID: RequestID, now: Instant) -> [Directive] {
        guard let request = requests.removeValue(forKey: requestID) else { return [] }
        release(request)
        var out: [Directive] = []
        if peers[request.peer]?.kind == .likely { peers[request.peer]!.kind = .known }   // behind: only what it announces
        if chunks[request.chunk] != nil {
            chunks[request.chunk]!.notHeldBy.insert(request.peer)
            let chunk = chunks[request.chunk]!
            if peers.keys.contains(where: { peers[$0]!.holds(chunk.ref.id) && !chunk.notHeldBy.contains($0) }) {
                requeue(request.chunk)
            } else {
                chunks[request.chunk]!.attempts += 1
                for path in Set(chunk.waiting.map(\.path)).sorted() {
                    cancel(path)
                    out.append(.fileFailed(path: path, reason: .chunkUnavailable(chunk.ref.id, attempts: chunk.attempts + 1)))
                }
            }
        }
        return out + schedule(now: now)
    }

    /// Gives up requests older than `requestTimeout` and retries them elsewhere.
    public mutating func tick(now: Instant) -> [Directive] {
        var out: [Directive] = []
        for id in requests.keys.sorted() {
            guard let request = requests[id], request.sentAt.duration(to: now) >= configuration.requestTimeout
            else { continue }
            requests[id] = nil
            release(request)
            if chunks[request.chunk] != nil { out += failed(request.chunk, by: request.peer) }
        }
        return out + schedule(now: now)
    }

    // MARK: internals

    /// One placement needs `ref`: copy it if the bytes are here, else join (or start) its fetch.
    private mutating func need(_ ref: ChunkRef, at placement: Placement) -> [Directive] {
        if available.contains(ref.id) { return [copy(ref, to: placement)] }
        if chunks[ref.id] != nil {
            chunks[ref.id]!.waiting.append(placement)
        } else {
            chunks[ref.id] = ChunkState(ref: ref, waiting: [placement])
            queue.append(ref.id)
            for (peer, state) in peers where state.known.contains(ref.id) { peers[peer]!.offers.append(ref.id) }
        }
        return []
    }

    /// Queued or parked chunks among `ids` go on `peer`'s offers (parked ones are queued again).
    private mutating func offer(_ ids: [ChunkID], by peer: ShortDeviceID) {
        for id in ids {
            guard let chunk = chunks[id] else { continue }
            chunks[id]!.notHeldBy.remove(peer)
            if chunk.status == .parked { chunks[id]!.status = .queued }
            if chunks[id]!.status == .queued { peers[peer]!.offers.append(id) }
        }
    }

    /// The chunks queued since `start`, in runs of `shuffleRun`, the runs in seeded random order.
    private mutating func shuffleRuns(from start: Int) {
        let run = configuration.shuffleRun
        guard run > 0, queue.count - start > run else { return }
        var runs = stride(from: start, to: queue.count, by: run).map { Array(queue[$0..<min($0 + run, queue.count)]) }
        for i in stride(from: runs.count - 1, to: 0, by: -1) { runs.swapAt(i, random.next(below: i + 1)) }
        queue.replaceSubrange(start..., with: runs.joined())
    }

    private mutating func copy(_ ref: ChunkRef, to placement: Placement) -> Directive {
        files[placement.path]?.copying.insert(placement.offset)
        return .copyLocal(ref, toPath: placement.path, offset: placement.offset)
    }

    private mutating func release(_ request: Request) {
        outstandingBytes -= request.bytes
        peers[request.peer]?.outstanding -= 1
    }

    /// Back to the front of the line, ahead of chunks never tried.
    private mutating func requeue(_ id: ChunkID) {
        chunks[id]!.status = .queued
        retry.append(id)
        for (peer, state) in peers where state.known.contains(id) { peers[peer]!.offers.append(id) }
    }

    /// A request for `id` failed at `peer`: retry elsewhere, or fail its files after too many tries.
    private mutating func failed(_ id: ChunkID, by peer: ShortDeviceID) -> [Directive] {
        chunks[id]!.attempts += 1
        chunks[id]!.excluded.insert(peer)
        let chunk = chunks[id]!
        guard chunk.attempts >= configuration.maxAttempts else {
            requeue(id)
            return []
        }
        var out: [Directive] = []
        for path in Set(chunk.waiting.map(\.path)).sorted() {
            cancel(path)
            out.append(.fileFailed(path: path, reason: .chunkUnavailable(id, attempts: chunk.attempts)))
        }
        return out
    }

    private enum Assignment {
        case sent(Directive)
        /// Every peer that could take it is busy; later chunks may still go to others.
        case busy
        /// Parked or no longer needed: out of the line.
        case gone
        /// The byte budget is spent: nothing more goes out now.
        case stop
    }

    /// Hands queued chunks to peers until windows or the byte budget are full: first what peers
    /// announced (their offers), then the rest in line to peers asked on speculation.
    private mutating func schedule(now: Instant) -> [Directive] {
        var out: [Directive] = []
        var stopped = false
        // Announced chunks, to their holders.
        for peer in peers.keys.sorted() where !stopped {
            while !stopped, peers[peer]!.outstanding < configuration.window, peers[peer]!.offerHead < peers[peer]!.offers.count {
                let id = peers[peer]!.offers[peers[peer]!.offerHead]
                switch assign(id, now: now) {
                case .sent(let directive): out.append(directive)
                case .stop: stopped = true; continue
                case .busy, .gone: break
                }
                peers[peer]!.offerHead += 1
            }
            if peers[peer]!.offerHead > 1024 && peers[peer]!.offerHead * 2 > peers[peer]!.offers.count {
                peers[peer]!.offers.removeFirst(peers[peer]!.offerHead)
                peers[peer]!.offerHead = 0
            }
        }
        // The rest in line, while a peer asked on speculation has room.
        var keep: [ChunkID] = []
        for id in retry {
            if stopped || !speculativeRoom { keep.append(id); continue }
            switch assign(id, now: now) {
            case .sent(let directive): out.append(directive)
            case .busy: keep.append(id)
            case .gone: break
            case .stop: stopped = true; keep.append(id)
            }
        }
        retry = keep
        var index = head
        while !stopped, speculativeRoom, index < queue.count {
            switch assign(queue[index], now: now) {
            case .sent(let directive): out.append(directive)
            case .busy, .gone: break
            case .stop: stopped = true
            }
            index += 1
        }
        while head < queue.count, chunks[queue[head]]?.status != .queued { head += 1 }
        if head > 1024 && head * 2 > queue.count {
            queue.removeFirst(head)
            head = 0
        }
        return out
    }

    /// Requests a peer may have outstanding for chunks it did not announce.
    private func speculativeLimit(_ peer: Peer) -> Int {
        swarming ? configuration.speculativeWindow : configuration.window
    }

    private var speculativeRoom: Bool {
        peers.values.contains { $0.isSpeculative && $0.outstanding < speculativeLimit($0) }
    }

    /// Sends `id` to the least-loaded peer that holds it: one that announced it if any does (busy
    /// if they all are), else one asked on speculation within its limit.
    private mutating func assign(_ id: ChunkID, now: Instant) -> Assignment {
        guard var chunk = chunks[id], chunk.status == .queued else { return .gone }
        let size = Int(chunk.ref.size)
        if outstandingBytes > 0 && outstandingBytes + size > configuration.maxOutstandingBytes { return .stop }
        let holders = peers.keys.filter { peers[$0]!.holds(id) && !chunk.notHeldBy.contains($0) }
        if holders.isEmpty {
            chunks[id]!.status = .parked
            parked.append(id)
            return .gone
        }
        var usable = holders.filter { !chunk.excluded.contains($0) }
        if usable.isEmpty {   // every holder failed it once: go round again, `maxAttempts` bounds this
            chunk.excluded = []
            usable = holders
        }
        let known = usable.filter { peers[$0]!.known.contains(id) }
        let free = known.isEmpty
            ? usable.filter { peers[$0]!.outstanding < speculativeLimit(peers[$0]!) }
            : known.filter { peers[$0]!.outstanding < configuration.window }
        guard let least = free.map({ peers[$0]!.outstanding }).min() else { return .busy }
        let tied = free.filter { peers[$0]!.outstanding == least }.sorted()
        let peer = tied.count == 1 ? tied[0] : tied[Int(random.next() % UInt64(tied.count))]

        let requestID = nextRequestID
        nextRequestID += 1
        chunk.status = .inFlight(requestID)
        chunks[id] = chunk
        requests[requestID] = Request(chunk: id, peer: peer, sentAt: now, bytes: size)
        peers[peer]!.outstanding += 1
        outstandingBytes += size
        return .sent(.request(peer: peer, chunk: chunk.ref, requestID: requestID))
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny seeded generator, so ties break the same way in a
/// test every time and differently on devices seeded differently; the replication simulator draws
/// every fault from one.
public struct SplitMix64: Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    /// A number below `bound` (> 0); slightly biased, which no test here can tell.
    public mutating func next(below bound: Int) -> Int { Int(next() % UInt64(bound)) }

    /// True with probability `p` (0...1).
    public mutating func chance(_ p: Double) -> Bool { Double(next() >> 11) / Double(1 << 53) < p }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
