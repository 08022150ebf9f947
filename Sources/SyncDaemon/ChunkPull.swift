import Foundation
import SyncCompression
import SyncCore
import SyncFS
import SyncReplication
import SyncSecurity
import SyncStore

/// Gets the chunks of a batch's files and writes them into staged files (or memory, for chunk-list
/// pieces): the shell of `SyncReplication.PullPlanner`, which alone decides which chunk is copied
/// from a local file and which is asked of which peer, how many are in flight, and what is retried
/// where. This class carries its directives out and feeds the answers back in:
///
/// - `.request` → a chunk request on the peer's session; the answer is opened (storage peers send
///   sealed chunks), checked against the keyed chunk id off the network thread, and written at
///   every offset that needs it;
/// - `.copyLocal` → the bytes read from a local file that has the chunk (renames, copies, edits
///   that keep most of a file) or from a file this pull already wrote, verified; a chunk of zeros
///   is neither fetched nor written, so sparse files arrive sparse;
/// - `.fileComplete` → size, mode and mtime set on the open file (and fsync for small batches);
/// - `.fileFailed` → that file is left out, with the reason (`FolderExchange.PullError`).
///
/// Peers come and go during a pull: connected peers are handed to the planner as they appear (a
/// newcomer's first big pull spreads over every peer as their sessions come up), a peer whose
/// session ends or that lets a request time out while others can serve is taken out (its requests
/// go to the others without counting as failures). With no peer left, what remains fails.
final class ChunkPull: @unchecked Sendable {
    /// Where a chunk's bytes are in the folder (folder-relative path, byte offset).
    typealias Location = (path: String, offset: Int64)

    /// A peer's answer to one request.
    enum Answer {
        /// The bytes the peer sent (opened by `Environment.open`).
        case bytes([UInt8])
        /// A chunk the peer sent as raw deflate (`dataDeflated`), announced as `rawSize` bytes:
        /// inflated here, off the network thread, never past the size requested; a `rawSize` other
        /// than the chunk's, or a stream that does not inflate to exactly it, is a bad answer.
        case deflated(rawSize: Int, [UInt8])
        /// The peer answered it does not have the chunk.
        case refused
        /// A reply that does not open (a storage peer's sealed chunk that fails its checks).
        case bad
        /// No answer: the session ended, or the peer was left out for stalling.
        case lost
    }

    /// What the pull needs from its folder and sessions.
    struct Environment {
        var folder: any WritableFileSystem
        var ids: ChunkHasher
        var zeros: ZeroChunks
        /// Where chunks are in local files (the index).
        var locate: ([ChunkID]) -> [ChunkID: Location]
        /// Peers that can serve now (connected, with access, not stalled).
        var peers: () -> [ShortDeviceID]
        /// Peers that gossip says hold the folder, connected or not yet.
        var announced: () -> Set<ShortDeviceID> = { [] }
        /// Sends a request for `chunk` to `peer`; `answer` is called exactly once, on any thread,
        /// with the bytes as they came.
        var request: (_ peer: ShortDeviceID, _ chunk: ChunkRef, _ answer: @escaping @Sendable (Answer) -> Void) -> Void
        /// The chunk's plaintext from what `peer` sent (a storage peer's sealed chunk opened and
        /// checked; others' bytes as they are), nil if it does not open. Called off the network thread.
        var open: (_ peer: ShortDeviceID, _ bytes: [UInt8]) -> [UInt8]? = { _, bytes in bytes }
        /// Swarm (FolderExchange+Swarm.swift): a verified chunk this pull fetched was written at
        /// `offset` of staged file `path` — servable from there, and announced.
        var staged: (_ id: ChunkID, _ path: String, _ offset: Int64) -> Void = { _, _, _ in }
        /// The pull is over: its chunks are no longer served from its staged files.
        var unstage: ([ChunkID]) -> Void = { _ in }
        /// Sends the announcements that wait (each tick).
        var flushAnnouncements: () -> Void = {}
        /// Calls the function with each peer's announcement (`have`) until the returned one is called.
        var listen: (@escaping @Sendable (ShortDeviceID, [ChunkID]) -> Void) -> @Sendable () -> Void = { _ in {} }
        /// What a peer announced lately (told to the planner when the peer joins the pull).
        var recent: (ShortDeviceID) -> [ChunkID] = { _ in [] }
        /// How long a request to `peer` may go unanswered (seconds).
        var timeout: (ShortDeviceID) -> TimeInterval
        /// `peer` let a request time out while others can serve: fail its requests, leave it out a while.
        var stall: (ShortDeviceID) -> Void
    }

    /// One file to get: its chunks and where they go.
    struct Job {
        enum Destination: Equatable {
            /// A new temp file at this folder-relative path (created here, O_EXCL), given the
            /// entry's size, mode and mtime once complete.
            case file(String, FileMetadata)
            /// Kept in memory (chunk-list pieces).
            case memory
        }
        var key: Int
        var chunks: [ChunkRef]
        var destination: Destination

        var temp: String? { if case .file(let path, _) = destination { path } else { nil } }
    }

    struct Outcome {
        /// Keys of files that are complete (their temp file closed, or their bytes in `memory`).
        var done: Set<Int> = []
        var memory: [Int: [UInt8]] = [:]
        var failures: [Int: Error] = [:]
    }

    /// Planner settings for pulls: 128 requests in flight per peer and 32 MiB over all (bounds the
    /// memory of chunks in flight); timeouts are the shell's (`Environment.timeout`, per peer).
    /// Swarm: once peers announce chunks, at most 4 requests per peer for chunks it did not
    /// announce (the writer serves each chunk about once), and chunks go in runs of 16 (about
    /// 1 MiB), the runs in random order, so receivers start on different parts of the data.
    static let configuration = PullPlanner.Configuration(window: 128, maxOutstandingBytes: 32 << 20,
                                                         requestTimeout: .seconds(3600), maxAttempts: 5,
                                                         speculativeWindow: 4, shuffleRun: 16)
    /// How often the waiting thread looks for timed-out requests and new or gone peers (seconds).
    static let tickInterval = 0.1
    /// A pull of more than `spreadBytes` (8 MiB) waits up to `spreadWait` (1 s) for the sessions
    /// to every peer gossip says holds the folder, so a newcomer's first big pull spreads over all
    /// of them rather than going to the first session up (which could serve it all before the
    /// others connect).
    static let spreadBytes: Int64 = 8 << 20
    static let spreadWait = 1.0
    /// Write-behind: each file's written bytes start going to disk every 8 MiB, so a batch's final
    /// flush finds little left and the disk works while the network does.
    static let writeBackEvery: Int64 = 8 << 20

    /// A file being written.
    final class Target: @unchecked Sendable {
        let job: Job
        let lock = Lock()
        var writer: (any FileWriter)?
        var memory: [UInt8]
        var unflushed: Int64 = 0
        var failed = false

        /// No more writes; its file is closed now (so a big failed batch holds no descriptors).
        func fail() {
            lock.withLock {
                failed = true
                writer?.close()
                writer = nil
            }
        }

        init(job: Job) {
            self.job = job
            memory = job.destination == .memory ? [UInt8](repeating: 0, count: job.chunks.reduce(0) { $0 + Int($1.size) }) : []
        }
    }

    let env: Environment
    /// The peer that announced the batch: a chunk it refuses means its file changed there again.
    let announcer: ShortDeviceID
    let syncEach: Bool

    private let condition = WaitCondition()
    private var planner: PullPlanner
    private var targets: [String: Target] = [:]
    private var peers: Set<ShortDeviceID> = []
    /// Requests in flight: who was asked, and when (for the per-peer timeout).
    private var sent: [PullPlanner.RequestID: (peer: ShortDeviceID, at: DispatchTime)] = [:]
    /// Chunks received in this pull: where they were written (copied from there when needed again).
    private var written: [ChunkID: Location] = [:]
    private var locations: [ChunkID: Location] = [:]
    private var refusedByAnnouncer: Set<ChunkID> = []
    /// Every chunk this pull needs (announcements of others are ignored).
    private var wanted: Set<ChunkID> = []
    /// When each peer last answered anything: a request is late only when its peer has answered
    /// nothing for a timeout since it was sent (a full window queues behind itself).
    private var lastAnswer: [ShortDeviceID: DispatchTime] = [:]
    private var tasks = 0
    private var outcome = Outcome()
    private var aborted: Error?

    private let seed: UInt64

    init(_ env: Environment, announcer: ShortDeviceID, syncEach: Bool, seed: UInt64 = .random(in: 0...UInt64.max)) {
        self.env = env
        self.announcer = announcer
        self.syncEach = syncEach
        self.seed = seed
        planner = PullPlanner(configuration: Self.configuration, seed: seed)
    }

    /// Gets every job's chunks; returns when each job is complete or failed.
    func run(_ jobs: [Job]) -> Outcome {
        guard !jobs.isEmpty else { return Outcome() }
        let wanted = Set(jobs.flatMap { $0.chunks.map(\.id) })
        locations = env.locate(Array(wanted))
        condition.withLock { self.wanted = wanted }
        let stopListening = env.listen { [self] peer, ids in announced(ids, by: peer) }
        defer {
            stopListening()
            env.unstage(condition.withLock { Array(written.keys) })
        }
        var here = Set(locations.keys)
        for job in jobs { for c in job.chunks where env.zeros.isZero(c, env.ids) { here.insert(c.id) } }
        planner = PullPlanner(configuration: Self.configuration, localChunks: here, seed: seed)
        let files = jobs.map { PullPlanner.FileToFetch(path: Self.name($0.key), chunks: $0.chunks) }
        let bytes = jobs.reduce(Int64(0)) { total, job in total + job.chunks.reduce(0) { $0 + Int64($1.size) } }
        if bytes > Self.spreadBytes {
            let announced = env.announced(), deadline = DispatchTime.now() + Self.spreadWait
            while !announced.isSubset(of: Set(env.peers())) && DispatchTime.now() < deadline {
                _ = condition.wait(timeout: 0.05) { false }   // sessions come up on other threads; look again
            }
        }
        let first: [PullPlanner.Directive] = condition.withLock {
            for job in jobs { targets[Self.name(job.key)] = Target(job: job) }
            return syncPeers() + planner.add(files, now: .now)
        }
        // Requests first, so the network works while local chunks are copied.
        perform(first.filter { if case .request = $0 { true } else { false } } + first.filter { if case .request = $0 { false } else { true } })
        while true {
            let finished = condition.wait(timeout: Self.tickInterval) { planner.isFinished && tasks == 0 }
            if finished { break }
            perform(tick())
        }
        return condition.withLock {
            for target in targets.values { target.writer?.close() }
            for (key, _) in outcome.failures { if let temp = targets[Self.name(key)]?.job.temp { try? env.folder.remove(temp) } }
            return outcome
        }
    }

    static func name(_ key: Int) -> String { "\(key)" }

    // MARK: inputs (under the lock)

    /// Hands new peers to the planner and takes gone ones out; fails what is left when no peer is.
    private func syncPeers() -> [PullPlanner.Directive] {
        let now = Set(env.peers())
        var out: [PullPlanner.Directive] = []
        for peer in now.subtracting(peers).sorted() {
            // The batch's announcer has it all; another peer may be up to date or behind (asked
            // until it refuses, then for what it announces).
            out += planner.peerConnected(peer, inventory: peer == announcer ? .everything : .likely, now: .now)
            out += planner.peerAnnounced(peer, chunks: env.recent(peer).filter(wanted.contains), now: .now)
        }
        for peer in peers.subtracting(now).sorted() { out += planner.peerDisconnected(peer, now: .now) }
        peers = now
        if now.isEmpty && !planner.isFinished { abort(PullError(description: "no connected peer serves this folder")) }
        return out
    }

    /// Every file still in progress fails with `error` (a full disk, no peer left).
    private func abort(_ error: Error) {
        aborted = aborted ?? error
        for (name, target) in targets where !outcome.done.contains(target.job.key) && outcome.failures[target.job.key] == nil {
            planner.cancel(name)
            outcome.failures[target.job.key] = error
            target.fail()
        }
    }

    /// Requests unanswered past their peer's timeout: a peer that stalls while others can serve
    /// is left out (`Environment.stall`: its requests fail at once and go to the others, without
    /// counting against the chunks); otherwise the request is a failed attempt, retried.
    private func tick() -> [PullPlanner.Directive] {
        let (timedOut, late): ([PullPlanner.RequestID], Set<ShortDeviceID>) = condition.withLock {
            let now = DispatchTime.now()
            let over = sent.filter { _, request in
                let since = max(request.at.uptimeNanoseconds, lastAnswer[request.peer]?.uptimeNanoseconds ?? 0)
                return Double(now.uptimeNanoseconds - since) / 1e9 > env.timeout(request.peer)
            }
            return (over.keys.sorted(), peers.count > 1 ? Set(over.values.map(\.peer)) : [])
        }
        for peer in late.sorted() { env.stall(peer) }
        env.flushAnnouncements()
        return condition.withLock {
            var out = syncPeers()
            for id in timedOut {
                guard let request = sent.removeValue(forKey: id) else { continue }
                // A late answer is ignored; a peer already taken out had its requests moved.
                if peers.contains(request.peer) { out += planner.received(id, ok: false, now: .now) }
            }
            return out
        }
    }

    // MARK: directives

    private func perform(_ directives: [PullPlanner.Directive]) {
        var work = directives
        while !work.isEmpty {
            let directive = work.removeFirst()
            switch directive {
            case let .request(peer, chunk, id):
                condition.withLock { sent[id] = (peer, .now()) }
                let task = { @Sendable [self] (answer: Answer) in
                    condition.withLock { tasks += 1 }
                    DispatchQueue.global().async { [self] in answered(id, chunk, from: peer, answer) }
                }
                env.request(peer, chunk, task)
            case let .copyLocal(chunk, name, offset):
                let result = copy(chunk, into: name, at: offset)
                work += condition.withLock {
                    planner.copied(chunk, toPath: name, offset: offset, ok: result == .copied, localMiss: result == .notHere, now: .now)
                }
            case .fileComplete(let name):
                work += finish(name)
            case let .fileFailed(name, reason):
                condition.withLock {
                    guard let target = targets[name] else { return }
                    target.fail()
                    var gone = false
                    if case .chunkUnavailable(let id, _) = reason { gone = refusedByAnnouncer.contains(id) }
                    let description: String = switch reason {
                    case .chunkUnavailable(let id, let n): "chunk \(id) did not arrive from any peer (\(n) attempts)"
                    case .copyFailed(let id, let n): "chunk \(id) could not be written (\(n) attempts)"
                    }
                    outcome.failures[target.job.key] = aborted ?? PullError(description: description, gone: gone)
                }
            }
        }
    }

    /// An answer (on a global queue): verified, then written wherever the planner says.
    private func answered(_ id: PullPlanner.RequestID, _ chunk: ChunkRef, from peer: ShortDeviceID, _ answer: Answer) {
        defer {
            // Only the last task of a finished pull wakes the waiting thread (it also wakes each tick).
            if condition.withLock({ tasks -= 1; return tasks == 0 && planner.isFinished }) { condition.broadcast() }
        }
        var bytes: [UInt8]?
        let raw: [UInt8]? = switch answer {
        case .bytes(let raw): raw
        case let .deflated(rawSize, packed): rawSize == Int(chunk.size) ? try? ChunkDeflate.inflate(packed, rawSize: rawSize) : nil
        case .refused, .bad, .lost: nil
        }
        if let raw, let data = env.open(peer, raw), data.count == Int(chunk.size),
           env.ids.chunkID(data) == chunk.id { bytes = data }
        let directives: [PullPlanner.Directive] = condition.withLock {
            if case .lost = answer {} else { lastAnswer[peer] = .now() }
            guard sent.removeValue(forKey: id) != nil else { return [] }   // timed out already, or cancelled
            switch answer {
            case .lost:
                // Its session ended or it was left out: its requests go to the others, uncounted
                // (a peer that is still or again connected comes back at the next tick).
                peers.remove(peer)
                return planner.peerDisconnected(peer, now: .now)
            case .refused:
                if peer == announcer { refusedByAnnouncer.insert(chunk.id) }
                return planner.notHeld(id, now: .now)
            case .bad, .bytes, .deflated:
                return planner.received(id, ok: bytes != nil, now: .now)
            }
        }
        guard let data = bytes else { return perform(directives) }
        let isZero = env.zeros.noteIfZero(data, chunk)
        var rest: [PullPlanner.Directive] = []
        for directive in directives {
            // The planner asks for the bytes just received at every offset that waits for them.
            guard case let .copyLocal(c, name, offset) = directive, c.id == chunk.id else { rest.append(directive); continue }
            let ok = isZero || write(data, into: name, at: offset)
            if ok, !isZero, let at: Location = condition.withLock({
                guard written[chunk.id] == nil, let at = location(name, offset) else { return nil }
                written[chunk.id] = at
                return at
            }) { env.staged(chunk.id, at.path, at.offset) }
            rest += condition.withLock { planner.copied(c, toPath: name, offset: offset, ok: ok, now: .now) }
        }
        perform(rest)
    }

    /// A peer's `have` (any thread): the chunks of this pull it now holds go to the planner.
    private func announced(_ ids: [ChunkID], by peer: ShortDeviceID) {
        DispatchQueue.global().async { [self] in
            perform(condition.withLock {
                guard peers.contains(peer) else { return [] }
                let needed = ids.filter(wanted.contains)
                return needed.isEmpty ? [] : planner.peerAnnounced(peer, chunks: needed, now: .now)
            })
        }
    }

    private func location(_ name: String, _ offset: Int64) -> Location? {
        targets[name]?.job.temp.map { ($0, offset) }
    }

    enum CopyResult { case copied, notHere, notWritten }

    /// `.copyLocal`: a chunk whose bytes are here — a hole, a local file, or a file of this pull.
    /// `notHere` when the local file no longer has it (changed since it was indexed: it is fetched).
    private func copy(_ chunk: ChunkRef, into name: String, at offset: Int64) -> CopyResult {
        if env.zeros.isZero(chunk, env.ids) { return .copied }
        let from = condition.withLock { written[chunk.id] ?? locations[chunk.id] }
        guard let at = from, let data = env.folder.read(at.path, offset: at.offset, count: Int(chunk.size)),
              env.ids.chunkID(data) == chunk.id else { return .notHere }
        return write(data, into: name, at: offset) ? .copied : .notWritten
    }

    /// Writes verified chunk bytes into a target; false if that failed (a full disk fails the pull).
    private func write(_ data: [UInt8], into name: String, at offset: Int64) -> Bool {
        guard let target = condition.withLock({ targets[name] }) else { return false }
        do {
            try target.lock.withLock {
                guard !target.failed else { throw PullError(description: "cancelled") }
                if target.job.destination == .memory {
                    guard offset + Int64(data.count) <= Int64(target.memory.count) else { throw PullError(description: "chunk past the end") }
                    target.memory.replaceSubrange(Int(offset)..<Int(offset) + data.count, with: data)
                    return
                }
                let writer = try self.writer(target)
                try data.withUnsafeBytes { try writer.write($0, at: offset) }
                target.unflushed += Int64(data.count)
                if target.unflushed >= Self.writeBackEvery {
                    writer.startWriteBack(offset: 0, count: 0)
                    target.unflushed = 0
                }
            }
            return true
        } catch let e as FileSystemError where e.errno == ENOSPC || e.errno == EDQUOT {
            condition.withLock { abort(PullError(description: "disk full")) }
            return false
        } catch {
            return false
        }
    }

    /// The target's temp file, created on first use (under the target's lock).
    private func writer(_ target: Target) throws -> any FileWriter {
        if let w = target.writer { return w }
        guard let temp = target.job.temp else { throw PullError(description: "not a file") }
        let w = try env.folder.createFile(temp, mode: 0o600)
        target.writer = w
        return w
    }

    /// `.fileComplete`: size, mode and mtime on the open file (fsync for small batches), closed.
    private func finish(_ name: String) -> [PullPlanner.Directive] {
        guard let target = condition.withLock({ targets[name] }) else { return [] }
        do {
            try target.lock.withLock {
                guard !target.failed else { throw PullError(description: "cancelled") }
                guard case .file(_, let metadata) = target.job.destination else { return }
                let file = try writer(target)
                try file.truncate(metadata.size)
                try file.setMode(metadata.mode & 0o7777)
                try file.setModificationTime(metadata.mtimeNs)
                if syncEach { try file.synchronize() }
                file.close()
                target.writer = nil
            }
            condition.withLock {
                outcome.done.insert(target.job.key)
                if target.job.destination == .memory { outcome.memory[target.job.key] = target.memory }
            }
        } catch let e as FileSystemError where e.errno == ENOSPC || e.errno == EDQUOT {
            condition.withLock { abort(PullError(description: "disk full")) }
        } catch {
            condition.withLock {
                if outcome.failures[target.job.key] == nil { outcome.failures[target.job.key] = error }
                target.fail()
            }
        }
        return []
    }
}

/// The keyed ids of chunks of zeros, by size: such chunks are neither fetched nor written (holes).
/// FastCDC cuts a run of zeros into chunks of its maximum size, so that one size is hashed (once);
/// the id of another size is learnt only once a verified chunk of that size turned out all zeros
/// (`noteIfZero`) — hashing zeros for every size would double the receiver's hashing.
final class ZeroChunks: @unchecked Sendable {
    private let lock = Lock()
    private var ids: [UInt32: ChunkID] = [:]

    func isZero(_ chunk: ChunkRef, _ hasher: ChunkHasher) -> Bool {
        if let id = lock.withLock({ ids[chunk.size] }) { return id == chunk.id }
        guard Int(chunk.size) == FastCDC.Parameters.default.maxSize else { return false }
        let id = hasher.chunkID([UInt8](repeating: 0, count: Int(chunk.size)))
        lock.withLock { ids[chunk.size] = id }
        return id == chunk.id
    }

    /// Whether verified chunk bytes are all zeros (written as a hole); remembers the id.
    func noteIfZero(_ data: [UInt8], _ chunk: ChunkRef) -> Bool {
        guard data.withUnsafeBytes({ raw in raw.allSatisfy { $0 == 0 } }) else { return false }
        lock.withLock { ids[chunk.size] = chunk.id }
        return true
    }
}
