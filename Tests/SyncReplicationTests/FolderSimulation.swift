import SyncCore
import SyncFS
import SyncReplication

/// A deterministic replication simulator (../shared/STYLE.md 14, after TigerBeetle's VOPR): a few
/// peers, each a `FolderModel` over a `FakeFileSystem` and an in-memory index, on a virtual clock,
/// with every fault drawn from one seed — local edits of every kind (files, directories, symlinks,
/// deletions, renames, the same path on several peers at once), sessions that drop, partitions and
/// heals, replayed manifests, files changed under the sender between announcement and fetch,
/// file-system errors (EACCES, ENOSPC, EIO), and crashes after any file-system operation.
///
/// The shell parts the daemon has in FolderExchange (fetching, staging, recording) are done here in
/// a few lines each; planning (`BatchPlan`), placing (`FolderPlacer`) and every session decision
/// (`FolderModel`) are the daemon's own code.
///
/// A run has a *safety* phase with faults on, then a *liveness* phase: everything heals, no new
/// faults, and the peers must converge. Invariants (`violations`):
/// - convergence: after the liveness phase every peer's tree is the same and every model says
///   "in sync" with every other peer;
/// - nothing lost: every version some scan indexed and no later version replaced (a head) is, at
///   the end, somewhere on some peer — live, a conflict copy, or in a trash;
/// - nothing torn: no file outside `.syncd/` ever holds bytes no user wrote (checked after every
///   crash and at the end);
/// - `wait` tells the truth: whenever nothing is in flight anywhere and a peer's model says it is
///   in sync with every other peer, their trees are equal.
final class FolderSimulation: @unchecked Sendable {   // one thread: the test's
    typealias Instant = ContinuousClock.Instant

    /// The fault knobs, all drawn from the seed ("swarm testing": each run its own mix).
    struct Knobs: CustomStringConvertible {
        var peers: Int
        var steps: Int
        var editRate: Double
        var dropRate: Double
        var partitionRate: Double
        var crashRate: Double
        var fsErrorRate: Double
        var replayRate: Double
        var changeUnderSenderRate: Double

        init(_ rng: inout SplitMix64) {
            peers = 3 + rng.next(below: 2)
            steps = 150 + rng.next(below: 250)
            editRate = [0.2, 0.4, 0.7][rng.next(below: 3)]
            dropRate = [0, 0.005, 0.02][rng.next(below: 3)]
            partitionRate = [0, 0.003, 0.01][rng.next(below: 3)]
            crashRate = [0, 0.0005, 0.002][rng.next(below: 3)]
            fsErrorRate = [0, 0.002, 0.01][rng.next(below: 3)]
            replayRate = [0, 0.01][rng.next(below: 2)]
            changeUnderSenderRate = [0, 0.05, 0.2][rng.next(below: 3)]
        }

        var description: String {
            "peers=\(peers) steps=\(steps) edit=\(editRate) drop=\(dropRate) partition=\(partitionRate) crash=\(crashRate) "
                + "fsError=\(fsErrorRate) replay=\(replayRate) changeUnderSender=\(changeUnderSenderRate)"
        }
    }

    /// A peer's index: what SQLite holds in the daemon; it survives a crash whole (a committed
    /// transaction), like the real one.
    struct Index {
        var entries: [String: FileEntry] = [:]
        var sequence: Int64 = 0
        var floors: [ShortDeviceID: (indexID: UInt64, sequence: UInt64)] = [:]

        func after(_ sequence: UInt64, limit: Int) -> [FileEntry] {
            Array(entries.values.filter { $0.sequence > Int64(sequence) }.sorted { $0.sequence < $1.sequence }.prefix(limit))
        }
    }

    struct ApplyJob {
        var id: FolderModel.BatchID
        var from: ShortDeviceID
        var batch: FolderModel.Batch
        var plan: BatchPlan?
        var locals: [String: FileEntry] = [:]
    }

    final class Peer: @unchecked Sendable {
        let id: ShortDeviceID
        let fs = FakeFileSystem()
        var index = Index()
        var model: FolderModel
        var up = true
        var job: ApplyJob?
        var jobAt: Instant?
        /// Local edits no scan has seen.
        var unscanned = false
        var nextTemp = 0

        init(id: ShortDeviceID, now: Instant) {
            self.id = id
            model = FolderModel(me: id, indexID: id &* 1000, sequence: 0)
        }
    }

    struct Envelope {
        var from: ShortDeviceID, to: ShortDeviceID, epoch: Int
        var message: FolderModel.Message
        var at: Instant
    }

    struct Timer {
        var at: Instant
        var peer: ShortDeviceID, other: ShortDeviceID, epoch: Int
        var reason: String
    }

    struct Pair: Hashable, Comparable {
        var a: ShortDeviceID, b: ShortDeviceID
        init(_ x: ShortDeviceID, _ y: ShortDeviceID) { a = min(x, y); b = max(x, y) }
        static func < (l: Pair, r: Pair) -> Bool { (l.a, l.b) < (r.a, r.b) }
    }

    let seed: UInt64
    var rng: SplitMix64
    let knobs: Knobs
    let start = ContinuousClock.now
    var elapsed: Duration = .zero
    var slices = 0
    var now: Instant { start + elapsed }
    var peers: [Peer] = []
    var network: [Envelope] = []
    var timers: [Timer] = []
    /// Connected pairs and their session epoch; pairs cut off by a partition until a time.
    var sessions: [Pair: Int] = [:]
    var epochs: [Pair: Int] = [:]
    var partitioned: [Pair: Instant] = [:]
    var faultsOn = true
    /// The user is acting: the file system never fails or crashes for them.
    var userActing = false
    var nextContent = 0
    /// Every byte string a user wrote (nothing else may appear in a file), and every version a
    /// scan indexed: (path, vector, content or nil for a deletion/directory/symlink).
    var written: Set<[UInt8]> = [[]]
    var indexed: [String: [(version: VersionVector, content: [UInt8]?)]] = [:]
    var userReplaced: Set<[UInt8]> = []
    /// Counts events that can change a tree or a model's verdict (the wait check runs after them).
    var changes = 0, checkedAt = -1
    var violations: [String] = []
    let verbose: Bool
    /// Deliberately broken rules, to show the invariants catch them (Docs/Testing.md).
    var mutation: Mutation?

    enum Mutation: String, CaseIterable {
        /// The engine before "Replication that cannot silently diverge": a failed apply is
        /// acknowledged anyway (skipped for good) and there is no anti-entropy to notice.
        case skipFailedChanges
    }

    static let names = ["a", "b", "c.txt", "d", "d/x", "d/y", "d/e/z", "f"]

    init(seed: UInt64, verbose: Bool = false, mutation: Mutation? = nil) {
        self.seed = seed
        self.verbose = verbose
        self.mutation = mutation
        rng = SplitMix64(seed: seed)
        knobs = Knobs(&rng)
        for i in 1...knobs.peers {
            let p = Peer(id: ShortDeviceID(i), now: start)
            peers.append(p)
        }
        for p in peers { install(p) }
    }

    func peer(_ id: ShortDeviceID) -> Peer { peers[Int(id) - 1] }

    /// Every event, printed when verbose (built only then: the simulator spends its time here otherwise).
    func note(_ s: @autoclosure () -> String) {
        if verbose { print("[\(elapsed)] \(s())") }
    }

    /// The fault hook of a peer's file system: draws from the simulation's generator, so the
    /// order of operations decides the faults and a seed replays exactly.
    func install(_ p: Peer) {
        p.fs.fault = { [unowned self, unowned p] op in self.fault(for: p, op) }
    }

    func fault(for p: Peer, _ op: FakeFileSystem.Operation) -> FakeFileSystem.FaultAction? {
        guard faultsOn, !userActing else { return nil }
        if rng.chance(knobs.crashRate) { return .crashAfter }
        if rng.chance(knobs.fsErrorRate) { return .fail([13, 28, 5][rng.next(below: 3)]) }   // EACCES, ENOSPC, EIO
        return nil
    }

    // MARK: running

    /// Runs the safety phase, then the liveness phase; returns the violations (empty when none).
    func run() -> [String] {
        for _ in 0..<knobs.steps {
            step()
            if violations.count > 0 { return violations }
        }
        // Liveness: heal everything, stop the faults, let it settle.
        faultsOn = false
        partitioned = [:]
        for p in peers where !p.up { restart(p) }
        var settled = false
        for _ in 0..<720 {   // 3 minutes of virtual time at most
            advance(.milliseconds(250))
            if quiet() && peers.allSatisfy({ p in p.model.isInSync(with: Set(peers.map(\.id)).subtracting([p.id])) }) {
                settled = true
                break
            }
        }
        if !settled {
            violations.append("did not converge within 3 virtual minutes: " + peers.map { p in
                "peer \(p.id): failing \(p.model.failing) batchError \(p.model.batchError ?? "-") applying \(p.model.isApplying) "
                    + "sessions " + p.model.sessions.keys.sorted().map { q in
                        let x = p.model.sessions[q]!
                        return "\(q): applied \(p.model.applied(of: q))/\(x.announced) acked \(x.acked)/\(p.model.sequence) digest \(p.model.digestState(q))"
                    }.joined(separator: ", ")
            }.joined(separator: "; "))
        }
        checkConverged()
        checkNothingLost()
        checkNothingTorn()
        return violations
    }

    /// One step of the safety phase: maybe some faults and edits, then 50 ms of time.
    func step() {
        if rng.chance(knobs.editRate), let p = randomUpPeer() { edit(p) }
        if rng.chance(knobs.editRate / 2), let p = randomUpPeer(), p.unscanned, p.job == nil { scan(p) }
        if rng.chance(knobs.dropRate), let pair = sessions.keys.sorted().randomElement(using: &rng) {
            note("drop session \(pair)")
            disconnect(pair)
        }
        if rng.chance(knobs.partitionRate), peers.count > 2 {
            // Cut one peer off from the rest for a while.
            let p = peers[rng.next(below: peers.count)]
            let until = now + .milliseconds(500 + rng.next(below: 5000))
            note("partition \(p.id) until +\(until - now)")
            for q in peers where q.id != p.id {
                partitioned[Pair(p.id, q.id)] = until
                if sessions[Pair(p.id, q.id)] != nil { disconnect(Pair(p.id, q.id)) }
            }
        }
        if rng.chance(knobs.crashRate * 5), let p = randomUpPeer() { crash(p, "kill -9") }
        if rng.chance(0.02), let p = peers.first(where: { !$0.up }) { restart(p) }
        advance(.milliseconds(50))
    }

    func randomUpPeer() -> Peer? {
        let up = peers.filter(\.up)
        return up.isEmpty ? nil : up[rng.next(below: up.count)]
    }

    /// Moves time forward by `span` in 10 ms slices, delivering messages, firing timers, running
    /// apply jobs, dialling, and ticking the models every 250 ms.
    func advance(_ span: Duration) {
        let end = elapsed + span
        while elapsed < end {
            elapsed += .milliseconds(10)
            slices += 1
            deliver()
            fireTimers()
            for p in peers where p.up { runJob(p) }
            dial()
            if slices % 25 == 0 {   // every 250 ms
                for p in peers where p.up {
                    if p.unscanned && p.job == nil && (!faultsOn || rng.chance(0.3)) { scan(p) }
                    let still = p.job == nil && !p.unscanned
                    var ticked = p.model.tick(now: now, still: still)
                    if mutation == .skipFailedChanges {   // no anti-entropy repair: its requests are dropped
                        ticked.removeAll { if case .send(_, .indexAck(_, _, 0)) = $0 { true } else { false } }
                    }
                    perform(p, ticked)
                }
            }
            checkWaitTellsTruth()
        }
    }

    /// Nothing in flight anywhere: no message, no timer due to close a session, no apply, no
    /// unscanned edit, every pair connected.
    func quiet() -> Bool {
        network.isEmpty && peers.allSatisfy { $0.up && $0.job == nil && !$0.unscanned && !$0.model.isApplying }
            && sessions.count == peers.count * (peers.count - 1) / 2
    }

    // MARK: the network

    func dial() {
        for i in peers.indices {
            for j in peers.indices where j > i {
                let a = peers[i], b = peers[j], pair = Pair(a.id, b.id)
                guard a.up, b.up, sessions[pair] == nil else { continue }
                if let until = partitioned[pair] {
                    if until > now { continue }
                    partitioned[pair] = nil
                }
                // Dial like the daemon: not every round at once.
                guard !faultsOn || rng.chance(0.2) else { continue }
                let epoch = (epochs[pair] ?? 0) + 1
                epochs[pair] = epoch
                sessions[pair] = epoch
                note("connect \(a.id)–\(b.id) epoch \(epoch)")
                perform(a, a.model.sessionUp(b.id))
                perform(b, b.model.sessionUp(a.id))
            }
        }
    }

    func disconnect(_ pair: Pair) {
        guard sessions.removeValue(forKey: pair) != nil else { return }
        network.removeAll { Pair($0.from, $0.to) == pair }
        for id in [pair.a, pair.b] {
            let p = peer(id), other = id == pair.a ? pair.b : pair.a
            if p.up { perform(p, p.model.sessionDown(other)) }
        }
    }

    func send(_ message: FolderModel.Message, from: ShortDeviceID, to: ShortDeviceID) {
        guard let epoch = sessions[Pair(from, to)] else { return }
        // A session is a TCP stream: in order; only the latency varies, and messages of a
        // session that ended are never delivered.
        let last = network.last { $0.from == from && $0.to == to }?.at ?? now
        let at = max(last, now + .milliseconds(1 + rng.next(below: 20)))
        network.append(Envelope(from: from, to: to, epoch: epoch, message: message, at: at))
        if faultsOn, case .manifest = message, rng.chance(knobs.replayRate) {
            // A replayed manifest (a hostile relay): it must be refused, never applied twice.
            network.append(Envelope(from: from, to: to, epoch: epoch, message: message, at: at + .milliseconds(5)))
        }
    }

    func deliver() {
        let due = network.enumerated().filter { $0.element.at <= now }
        guard !due.isEmpty else { return }
        let indices = Set(due.map(\.offset))
        network = network.enumerated().filter { !indices.contains($0.offset) }.map(\.element)
        for (_, e) in due {
            guard sessions[Pair(e.from, e.to)] == e.epoch else { continue }
            let p = peer(e.to)
            guard p.up else { continue }
            perform(p, p.model.received(e.message, from: e.from, now: now))
        }
    }

    func fireTimers() {
        let due = timers.filter { $0.at <= now }
        timers.removeAll { $0.at <= now }
        for t in due where sessions[Pair(t.peer, t.other)] == t.epoch {
            note("\(t.peer) closes session with \(t.other): \(t.reason)")
            disconnect(Pair(t.peer, t.other))
        }
    }

    // MARK: the shell

    /// Carries out a model's directives, as FolderExchange does.
    func perform(_ p: Peer, _ directives: [FolderModel.Directive]) {
        changes += 1
        for d in directives {
            guard p.up else { return }
            switch d {
            case let .send(to, message):
                send(message, from: p.id, to: to)
            case let .readIndex(peer, after, limit):
                perform(p, p.model.indexRead(for: peer, after: after, p.index.after(after, limit: limit)))
            case let .apply(id, from, batch):
                p.job = ApplyJob(id: id, from: from, batch: batch)
                p.jobAt = now + .milliseconds(rng.next(below: 40))
            case let .recordFloor(origin, indexID, sequence):
                p.index.floors[origin] = (indexID, sequence)
            case let .closeSession(other, reason, after):
                guard let epoch = sessions[Pair(p.id, other)] else { continue }
                timers.append(Timer(at: now + after, peer: p.id, other: other, epoch: epoch, reason: reason))
            }
        }
    }

    /// An apply in two stages, like the daemon's: plan against the index, then (later, a scan may
    /// come between) fetch, stage, and place-and-record under the scanner's exclusion.
    func runJob(_ p: Peer) {
        guard var job = p.job, let at = p.jobAt, at <= now else { return }
        if job.plan == nil {
            for e in job.batch.entries { job.locals[e.path] = p.index.entries[e.path] }
            job.plan = BatchPlan.make(job.batch.entries, locals: job.locals, origin: job.batch.origin)
            p.job = job
            p.jobAt = now + .milliseconds(rng.next(below: 60))
            return
        }
        p.job = nil
        let result = apply(job, on: p)
        if p.fs.crashed { crash(p, "crashed in the file system during an apply"); return }
        let done = mutation == .skipFailedChanges ? FolderModel.ApplyResult.ok : result
        perform(p, p.model.applied(job.id, done, now: now))
        indexChanged(p)
        p.unscanned = true   // the watcher sees what the apply did (conflict copies are new local files)
    }

    func apply(_ job: ApplyJob, on p: Peer) -> FolderModel.ApplyResult {
        let plan = job.plan!
        let counts = plan.deletions(against: job.locals)
        let live = p.index.entries.values.filter { !$0.deleted }.count
        if let held = p.model.massDeletionHeld(job.id, deleting: counts.deleting, creating: counts.creating, liveHere: live) {
            return .init(batchError: held)
        }
        // The plan was made against the index as it was; a scan may have recorded an edit since.
        for e in job.batch.entries where p.index.entries[e.path]?.version != job.locals[e.path]?.version {
            return .init(batchError: "\(e.path) changed here while its update was staged")
        }
        var failed: [String: String] = [:]
        var steps: [FolderPlacer.Step] = []
        for planned in plan.steps {
            var step = FolderPlacer.Step(planned)
            switch step {
            case .file(let e, _), .conflictCopy(let e, _, _):
                switch fetch(e, from: job.from, origin: job.batch.origin, into: p) {
                case .staged(let temp):
                    if case .conflictCopy(_, _, let name) = step { step = .conflictCopy(e, staged: temp, name: name) } else { step = .file(e, staged: temp) }
                case .gone:
                    continue   // superseded at the origin: its newer version follows
                case .failed(let why):
                    failed[e.path] = why
                    continue
                }
            default: break
            }
            steps.append(step)
        }
        if p.fs.crashed { return .init(batchError: "crashed") }
        let placer = FolderPlacer(
            folder: p.fs, me: p.id, maxConflictCopies: 10,
            indexed: { path in p.index.entries[path].map { ($0.metadata, $0.deleted) } },
            trashDirectory: { [unowned self] in ".syncd/trash/\(self.slices)" },
            temporaryName: { p.nextTemp += 1; return ".syncd/tmp/link-\(p.nextTemp)" },
            flush: { try p.fs.synchronize("") })
        let placed: FolderPlacer.Result
        do {
            placed = try placer.place(steps, conflictsLocal: plan.conflictsLocal, syncEach: true)
        } catch {
            return .init(failed: failed, batchError: "\(error)")
        }
        if p.fs.crashed { return .init(batchError: "crashed") }
        note("apply on \(p.id) from \(job.from) (origin \(job.batch.origin)): " + steps.map { "\($0)" }.joined(separator: "; ")
             + " conflictsLocal \(plan.conflictsLocal.sorted { $0.key < $1.key }) done \(placed.done.map(\.path)) failed \(placed.failed.map { "\($0.path): \($0.error)" }) kept \(placed.keptEdits) not fetched \(failed.sorted { $0.key < $1.key })")
        for f in placed.failed { failed[f.path] = "\(f.error)" }
        // Record what was placed, with what is on disk now (the daemon's recordRemoteEntries).
        for (e, placedHere) in plan.recordOnly.map({ ($0, false) }) + placed.done.map({ ($0, true) }) {
            p.index.sequence += 1
            var recorded = e
            recorded.sequence = p.index.sequence
            if placedHere, !e.deleted, let m = placed.metadata[e.path] {
                recorded.metadata = m
            } else if !placedHere, let local = job.locals[e.path], !local.deleted {
                recorded.metadata = local.metadata   // as the scan saw it (FolderApplier does the same)
            }
            p.index.entries[e.path] = recorded
        }
        if let error = placed.flushError {   // recorded, not acknowledged: applied again (the daemon does the same)
            return .init(failed: failed, batchError: "flushing failed: \(error)", deleted: counts.deleting, created: counts.creating)
        }
        return .init(failed: failed, deleted: counts.deleting, created: counts.creating)
    }

    enum Fetched { case staged(String), gone, failed(String) }

    /// The file's content from the session's peer, as its chunk request would get it: read from
    /// the peer's disk now, which may no longer hold that version ("gone" when the peer is the
    /// origin itself — a newer version follows). Staged under `.syncd/tmp/` and fsynced.
    func fetch(_ e: FileEntry, from: ShortDeviceID, origin: ShortDeviceID, into p: Peer) -> Fetched {
        let source = peer(from)
        guard source.up, sessions[Pair(p.id, from)] != nil else { return .failed("session ended") }
        let want = e.chunks.first?.id
        // Where the source's index says that chunk lives, if it still does.
        var bytes: [UInt8]?
        if e.chunks.isEmpty { bytes = [] } else {
            for f in source.index.entries.values.sorted(by: { $0.path < $1.path }) where !f.deleted && f.chunks.first?.id == want {
                if faultsOn, rng.chance(knobs.changeUnderSenderRate) {
                    // The file changed under the sender after it announced it.
                    userActing = true
                    if Self.ancestorsAreDirectories(source, f.path) { writeUserFile(source, f.path) }
                    userActing = false
                }
                if let data = try? source.fs.readSmallFile(f.path), Self.chunkID(data) == want { bytes = data; break }
            }
        }
        guard let bytes else { return from == origin ? .gone : .failed("chunk unavailable on \(from)") }
        p.nextTemp += 1
        let temp = ".syncd/tmp/f-\(p.nextTemp)"
        do {
            let w = try p.fs.createFile(temp, mode: 0o600)
            defer { w.close() }
            try bytes.withUnsafeBytes { try w.write($0, at: 0) }
            try w.setMode(e.metadata.mode & 0o7777)
            try w.setModificationTime(e.metadata.mtimeNs)
            try w.synchronize()
            return .staged(temp)
        } catch {
            try? p.fs.remove(temp)
            return .failed("\(error)")
        }
    }

    // MARK: users and scans

    func edit(_ p: Peer) {
        userActing = true
        defer { userActing = false }
        let path = Self.names[rng.next(below: Self.names.count)]
        // A user's `echo > d/x` fails when d is a file or a symlink: no edit then.
        guard Self.ancestorsAreDirectories(p, path) else { return }
        switch rng.next(below: 10) {
        case 0...4: writeUserFile(p, path)
        case 5: destroyedByUser(p, under: path); p.fs.delete(path)
        case 6: destroyedByUser(p, under: path); p.fs.mkdir(path)
        case 7: destroyedByUser(p, under: path); p.fs.symlink(path, target: ["../outside", "/etc", "a", "d/x"][rng.next(below: 4)])
        case 8:
            let to = Self.names[rng.next(below: Self.names.count)]
            if to != path && !to.hasPrefix(path + "/") && !path.hasPrefix(to + "/") && Self.ancestorsAreDirectories(p, to),
               (try? p.fs.metadata(path)) != nil, (try? p.fs.metadata(to))??.kind != .directory {
                destroyedByUser(p, under: to)
                p.fs.rename(path, to)
            }
        default:
            // The same path on another peer at the same moment: a conflict.
            writeUserFile(p, path)
            if let q = peers.filter({ $0.up && $0.id != p.id }).first, Self.ancestorsAreDirectories(q, path) { writeUserFile(q, path) }
        }
        p.unscanned = true
        try? p.fs.synchronize("")   // the user's data is on disk: a crash must not take it
        note("edit on \(p.id): \(path)")
    }

    func writeUserFile(_ p: Peer, _ path: String) {
        destroyedByUser(p, under: path)
        nextContent += 1
        let content = Array("v\(nextContent)@\(p.id)".utf8)
        note("user on \(p.id) writes \(path): v\(nextContent)@\(p.id)")
        written.insert(content)
        if let m = try? p.fs.metadata(path), m.kind == .directory { p.fs.delete(path) }
        p.fs.write(path, content)
        p.unscanned = true
        try? p.fs.synchronize("")
    }

    /// The user overwrites, deletes or replaces `path`: what it held is gone by their hand, not
    /// syncd's (the nothing-lost check exempts it).
    func destroyedByUser(_ p: Peer, under path: String) {
        for (name, e) in p.fs.snapshot() where e.kind == .file && (name == path || name.hasPrefix(path + "/")) {
            userReplaced.insert(e.content ?? [])
        }
    }

    /// Whether every ancestor of `path` is a directory or missing (a user can make it).
    static func ancestorsAreDirectories(_ p: Peer, _ path: String) -> Bool {
        var prefix = ""
        for name in path.split(separator: "/").dropLast() {
            prefix = RelativePath.join(prefix, String(name))
            guard let m = try? p.fs.metadata(prefix) else { return true }
            if m.kind != .directory { return false }
        }
        return true
    }

    static func chunkID(_ data: [UInt8]) -> ChunkID {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in data { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return ChunkID(w0: h, w1: UInt64(data.count), w2: 0, w3: 0)
    }

    /// The virtual clock in milliseconds since a made-up epoch (a counter floor, like the daemon's).
    var clockMs: UInt64 { 1_000_000 + UInt64(slices) * 10 }

    /// What the daemon's scanner does: every difference between the tree and the index becomes a
    /// new local version (this device's counter incremented), deletions included.
    func scan(_ p: Peer) {
        guard p.up else { return }
        p.unscanned = false
        var seen: Set<String> = []
        var changed: [FileEntry] = []
        func walk(_ dir: String) {
            for name in ((try? p.fs.list(dir)) ?? []).sorted() {
                let path = RelativePath.join(dir, name)
                if path == ".syncd" { continue }
                guard let m = try? p.fs.metadata(path) else { continue }
                seen.insert(path)
                let old = p.index.entries[path]
                let same = old.map { !$0.deleted && $0.kind == m.kind && m.looksUnchanged(from: $0.metadata) } ?? false
                if !same {
                    var chunks: [ChunkRef] = []
                    var content: [UInt8]?
                    if m.kind == .file, let data = try? p.fs.readSmallFile(path) {
                        chunks = data.isEmpty ? [] : [ChunkRef(id: Self.chunkID(data), size: UInt32(data.count))]
                        content = data
                    }
                    // The daemon's counter floor: milliseconds of the clock (IndexStore.counterClock).
                    let version = (old?.version ?? VersionVector()).incremented(by: p.id, now: clockMs)
                    changed.append(FileEntry(path: path, metadata: m, version: version, sequence: 0, chunks: chunks))
                    indexed[path, default: []].append((version, content))
                }
                if m.kind == .directory { walk(path) }
            }
        }
        walk("")
        for e in p.index.entries.values.sorted(by: { $0.path < $1.path }) where !e.deleted && !seen.contains(e.path) {
            let version = e.version.incremented(by: p.id, now: clockMs)
            changed.append(FileEntry(path: e.path, metadata: e.metadata, deleted: true, version: version, sequence: 0))
            indexed[e.path, default: []].append((version, nil))
        }
        guard !changed.isEmpty else { return }
        for var e in changed {
            p.index.sequence += 1
            e.sequence = p.index.sequence
            p.index.entries[e.path] = e
        }
        perform(p, p.model.localIndexChanged(sequence: UInt64(p.index.sequence), digest: digest(p.index), changed: changed.map(\.path)))
        note("scan on \(p.id): " + changed.map { "\($0.path) \($0.deleted ? "deleted" : "\($0.kind)") \($0.version)" }.joined(separator: ", "))
    }

    func indexChanged(_ p: Peer) {
        guard p.up else { return }
        perform(p, p.model.localIndexChanged(sequence: UInt64(p.index.sequence), digest: digest(p.index)))
    }

    func digest(_ index: Index) -> FolderModel.Digest {
        var a: UInt64 = 0, live: UInt64 = 0
        for e in index.entries.values where !e.deleted {
            var h: UInt64 = 0x9E37_79B9_7F4A_7C15
            for b in Array(e.path.utf8) + e.version.encoded { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
            a ^= h   // a set: order does not matter
            live += 1
        }
        return .init(sequence: UInt64(index.sequence), liveCount: live,
                     hash: withUnsafeBytes(of: a.littleEndian) { Array($0) })
    }

    // MARK: crashes

    func crash(_ p: Peer, _ why: String) {
        guard p.up else { return }
        note("crash \(p.id): \(why)")
        for pair in sessions.keys.sorted() where pair.a == p.id || pair.b == p.id { disconnect(pair) }
        p.up = false
        p.job = nil
        if !p.fs.crashed { p.fs.crash() } else { p.fs.restart() }
        checkNothingTorn()
    }

    /// The daemon starting again: staging cleared, the model rebuilt from the index, a scan.
    func restart(_ p: Peer) {
        guard !p.up else { return }
        note("restart \(p.id)")
        if p.fs.crashed { p.fs.restart() }
        userActing = true
        try? p.fs.removeTree(".syncd/tmp")
        userActing = false
        p.model = FolderModel(me: p.id, indexID: p.id &* 1000, sequence: UInt64(p.index.sequence), floors: p.index.floors)
        p.up = true
        p.unscanned = true
        scan(p)
        perform(p, p.model.localIndexChanged(sequence: UInt64(p.index.sequence), digest: digest(p.index)))
    }

    // MARK: invariants

    /// The tree outside `.syncd/`: path → kind and content or target.
    func tree(_ p: Peer) -> [String: String] {
        var out: [String: String] = [:]
        for (path, e) in p.fs.snapshot() where path != "" && path != ".syncd" && !path.hasPrefix(".syncd/") {
            switch e.kind {
            case .file: out[path] = "file " + String(decoding: e.content ?? [], as: UTF8.self)
            case .directory: out[path] = "dir"
            case .symlink: out[path] = "link " + (e.symlinkTarget ?? "")
            }
        }
        return out
    }

    func checkConverged() {
        let first = tree(peers[0])
        for p in peers.dropFirst() {
            let t = tree(p)
            if t != first {
                let keys = Set(first.keys).union(t.keys).sorted().filter { first[$0] != t[$0] }
                violations.append("peers 1 and \(p.id) differ after heal: " + keys.prefix(5).map { "\($0): \(first[$0] ?? "-") vs \(t[$0] ?? "-")" }.joined(separator: "; "))
            }
        }
    }

    /// A content some scan indexed must be somewhere at the end, unless a later version replaced
    /// it at a path that held it (a user overwrote or deleted it there — after a conflict, the
    /// loser's content moves to its copy's path, and the user may edit the copy).
    func checkNothingLost() {
        var everywhere: Set<[UInt8]> = []
        for p in peers {
            for (path, e) in p.fs.snapshot() where e.kind == .file && !path.hasPrefix(".syncd/tmp") {
                everywhere.insert(e.content ?? [])
            }
        }
        var replaced = userReplaced
        var heads: [(path: String, version: VersionVector, content: [UInt8])] = []
        for path in indexed.keys.sorted() {
            let versions = indexed[path]!
            for v in versions {
                guard let content = v.content else { continue }
                if versions.contains(where: { $0.version.compare(v.version) == .greater }) { replaced.insert(content) } else { heads.append((path, v.version, content)) }
            }
        }
        for h in heads where !replaced.contains(h.content) && !everywhere.contains(h.content) {
            violations.append("lost: \(h.path) \(h.version) \"\(String(decoding: h.content, as: UTF8.self))\" is nowhere (not live, not a conflict copy, not in a trash)")
        }
    }

    func checkNothingTorn() {
        for p in peers {
            for (path, e) in p.fs.snapshot() where e.kind == .file && !path.hasPrefix(".syncd/") {
                if !written.contains(e.content ?? []) {
                    violations.append("torn: \(path) on \(p.id) holds \(e.content ?? []) which no user wrote")
                }
            }
        }
    }

    func checkWaitTellsTruth() {
        // Only when something changed since the last look (trees are compared whole).
        guard changes != checkedAt else { return }
        checkedAt = changes
        guard network.isEmpty, timers.isEmpty, peers.allSatisfy({ $0.up && $0.job == nil && !$0.unscanned }) else { return }
        for p in peers {
            let others = Set(peers.map(\.id)).subtracting([p.id])
            guard p.model.isInSync(with: others) else { continue }
            let mine = tree(p)
            for q in peers where q.id != p.id && tree(q) != mine {
                let t = tree(q)
                let keys = Set(mine.keys).union(t.keys).sorted().filter { mine[$0] != t[$0] }
                violations.append("wait on \(p.id) said in sync while its tree differs from \(q.id)'s: "
                    + keys.prefix(3).map { "\($0): \(mine[$0] ?? "-") vs \(t[$0] ?? "-")" }.joined(separator: "; "))
                return
            }
        }
    }
}

extension Array {
    func randomElement(using rng: inout SplitMix64) -> Element? {
        isEmpty ? nil : self[rng.next(below: count)]
    }
}
