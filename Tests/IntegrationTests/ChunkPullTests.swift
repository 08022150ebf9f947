import Foundation
import SyncCompression
import SyncCore
@testable import SyncDaemon
import SyncFS
import SyncReplication
import SyncSecurity
import XCTest

/// `ChunkPull` — the shell of `PullPlanner` — over a fake file system and fake peers: what it
/// writes, whom it asks, and how it copes with refusals, stalls, lost sessions and a full disk.
final class ChunkPullTests: XCTestCase {
    let ids = ChunkHasher(key: [UInt8](repeating: 7, count: 32))

    /// Peers that answer from `content` (by chunk id) on another thread, or not at all.
    final class Peers: @unchecked Sendable {
        enum Behaviour {
            case serve, refuse, silent, lose
            /// Answers deflated (`dataDeflated`), as a peer does on a session that agreed to it.
            case serveDeflated
            /// Answers deflated, but the stream inflates past the size it announces (a zip bomb).
            case bomb
            /// Answers deflated, announcing a size other than the one asked.
            case wrongSize
        }
        let lock = NSLock()
        var behaviour: [ShortDeviceID: Behaviour]
        var content: [ChunkID: [UInt8]] = [:]
        var asked: [ShortDeviceID: Int] = [:]
        var stalled: Set<ShortDeviceID> = []
        var silentAnswers: [@Sendable (ChunkPull.Answer) -> Void] = []

        init(_ behaviour: [ShortDeviceID: Behaviour]) { self.behaviour = behaviour }

        var connected: [ShortDeviceID] {
            lock.lock(); defer { lock.unlock() }
            let live = behaviour.keys.filter { !stalled.contains($0) }
            return (live.isEmpty ? Array(behaviour.keys) : live).sorted()
        }

        func request(_ peer: ShortDeviceID, _ chunk: ChunkRef, _ answer: @escaping @Sendable (ChunkPull.Answer) -> Void) {
            lock.lock()
            asked[peer, default: 0] += 1
            let b = behaviour[peer], bytes = content[chunk.id]
            if b == .silent { silentAnswers.append(answer) }
            lock.unlock()
            switch b {
            case .serve?: DispatchQueue.global().async { answer(bytes.map { .bytes($0) } ?? .refused) }
            case .serveDeflated?:
                DispatchQueue.global().async { answer(bytes.map { .deflated(rawSize: $0.count, ChunkDeflate.deflate($0, limit: 2 << 20)!) } ?? .refused) }
            case .bomb?:
                let bomb = ChunkDeflate.deflate([UInt8](repeating: 0x20, count: 1 << 20), limit: 1 << 20)!
                DispatchQueue.global().async { answer(.deflated(rawSize: Int(chunk.size), bomb)) }
            case .wrongSize?:
                DispatchQueue.global().async { answer(bytes.map { .deflated(rawSize: $0.count + 1, ChunkDeflate.deflate($0 + [0], limit: 2 << 20)!) } ?? .refused) }
            case .refuse?: DispatchQueue.global().async { answer(.refused) }
            case .lose?, nil: answer(.lost)
            case .silent?: break
            }
        }

        /// Like `FolderExchange.stall`: the peer's requests fail now and it is left out.
        func stall(_ peer: ShortDeviceID) {
            lock.lock()
            stalled.insert(peer)
            let answers = behaviour[peer] == .silent ? silentAnswers : []
            if behaviour[peer] == .silent { silentAnswers = [] }
            lock.unlock()
            for a in answers { a(.lost) }
        }
    }

    let cdc = FastCDC(gear: FastCDC.testGear(seed: 1))

    /// The file's chunks as (offset, bytes).
    func pieces(_ data: [UInt8]) -> [(offset: Int, bytes: [UInt8])] {
        var offset = 0
        return cdc.chunkLengths(of: data).map { n in
            defer { offset += n }
            return (offset, Array(data[offset..<offset + n]))
        }
    }

    func chunks(of data: [UInt8]) -> [ChunkRef] {
        pieces(data).map { ChunkRef(id: ids.chunkID($0.bytes), size: UInt32($0.bytes.count)) }
    }

    func random(_ count: Int, seed: UInt64) -> [UInt8] {
        var g = SplitMix64(seed: seed)
        return (0..<count).map { _ in UInt8(truncatingIfNeeded: g.next()) }
    }

    func environment(_ fs: FakeFileSystem, _ peers: Peers, timeout: TimeInterval = 5,
                     local: [ChunkID: ChunkPull.Location] = [:]) -> ChunkPull.Environment {
        ChunkPull.Environment(folder: fs, ids: ids, zeros: ZeroChunks(),
                              locate: { wanted in local.filter { wanted.contains($0.key) } },
                              peers: { peers.connected },
                              request: { peers.request($0, $1, $2) },
                              timeout: { _ in timeout },
                              stall: { peers.stall($0) })
    }

    func metadata(_ size: Int) -> FileMetadata {
        FileMetadata(kind: .file, size: Int64(size), mode: 0o640, mtimeNs: 1_700_000_000_123_456_789, ctimeNs: 0, inode: 0)
    }

    func job(_ key: Int, _ data: [UInt8], fs: FakeFileSystem) -> ChunkPull.Job {
        .init(key: key, chunks: chunks(of: data), destination: .file("tmp/pull-\(key)", metadata(data.count)))
    }

    func serve(_ peers: Peers, _ files: [[UInt8]]) {
        for data in files {
            for p in pieces(data) { peers.content[ids.chunkID(p.bytes)] = p.bytes }
        }
    }

    func test_filesArriveWhole_withModeAndTime_spreadOverEveryPeer_andLocalChunksAreNotAsked() throws {
        let fs = FakeFileSystem()
        fs.mkdir("tmp")
        let big = random(3 << 20, seed: 1), small = (0..<50).map { random(4096, seed: 100 + UInt64($0)) }
        // A local file already holds the big file's first 1 MiB: those chunks are copied, not asked.
        fs.write("old", Array(big[0..<(1 << 20)]))
        var local: [ChunkID: ChunkPull.Location] = [:]
        for p in pieces(big) where p.offset + p.bytes.count <= 1 << 20 { local[ids.chunkID(p.bytes)] = ("old", Int64(p.offset)) }
        let peers = Peers([1: .serve, 2: .serve, 3: .serve])
        serve(peers, [big] + small)
        let jobs = [job(0, big, fs: fs)] + small.enumerated().map { job($0 + 1, $1, fs: fs) }
        let outcome = ChunkPull(environment(fs, peers, local: local), announcer: 1, syncEach: true).run(jobs)

        XCTAssertEqual(outcome.failures.count, 0, "\(outcome.failures)")
        XCTAssertEqual(outcome.done, Set(0...50))
        let tree = fs.snapshot()
        XCTAssertEqual(tree["tmp/pull-0"]?.content, big)
        for (i, data) in small.enumerated() { XCTAssertEqual(tree["tmp/pull-\(i + 1)"]?.content, data) }
        XCTAssertEqual(tree["tmp/pull-7"]?.mode, 0o640)
        XCTAssertEqual(try fs.metadata("tmp/pull-7")?.mtimeNs, 1_700_000_000_123_456_789)
        let asked = peers.asked.values.reduce(0, +)
        let needed = Set(jobs.flatMap(\.chunks).map(\.id)).subtracting(local.keys).count
        XCTAssertEqual(asked, needed, "every chunk not held locally is asked once")
        XCTAssertGreaterThan(local.count, 3)
        for peer in [1, 2, 3] as [ShortDeviceID] { XCTAssertGreaterThan(peers.asked[peer] ?? 0, needed / 6, "spread: \(peers.asked)") }
    }

    /// Text-like bytes: lines of a log.
    func text(_ count: Int, seed: UInt64) -> [UInt8] {
        var g = SplitMix64(seed: seed)
        var out: [UInt8] = []
        while out.count < count {
            let n = g.next() % 100_000
            out += Array("2026-05-01 12:00:\(n % 60) INFO user=\(n) action=view item=\(n % 977) took=\(n % 300)ms\n".utf8)
        }
        return Array(out.prefix(count))
    }

    func test_deflatedAnswers_areInflatedVerifiedAndWritten() throws {
        let fs = FakeFileSystem()
        fs.mkdir("tmp")
        let data = text(2 << 20, seed: 5)
        let peers = Peers([1: .serveDeflated])
        serve(peers, [data])
        let outcome = ChunkPull(environment(fs, peers), announcer: 1, syncEach: false).run([job(0, data, fs: fs)])
        XCTAssertEqual(outcome.failures.count, 0, "\(outcome.failures)")
        XCTAssertEqual(fs.snapshot()["tmp/pull-0"]?.content, data)
    }

    func test_aDeflatedAnswerThatInflatesPastItsSize_orAnnouncesAnotherSize_isABadAnswer_retriedElsewhere() throws {
        for hostile in [Peers.Behaviour.bomb, .wrongSize] {
            let fs = FakeFileSystem()
            fs.mkdir("tmp")
            let data = text(1 << 20, seed: 6)
            let peers = Peers([1: hostile, 2: .serveDeflated])
            serve(peers, [data])
            let outcome = ChunkPull(environment(fs, peers), announcer: 2, syncEach: false).run([job(0, data, fs: fs)])
            XCTAssertEqual(outcome.failures.count, 0, "\(hostile): \(outcome.failures)")
            XCTAssertEqual(fs.snapshot()["tmp/pull-0"]?.content, data, "\(hostile)")
            XCTAssertGreaterThan(peers.asked[1] ?? 0, 0, "\(hostile): the hostile peer was asked")

            // With only the hostile peer, the file fails after its attempts; nothing hostile is written.
            let alone = Peers([1: hostile])
            serve(alone, [data])
            let fs2 = FakeFileSystem()
            fs2.mkdir("tmp")
            let failed = ChunkPull(environment(fs2, alone), announcer: 1, syncEach: false).run([job(0, data, fs: fs2)])
            XCTAssertEqual(failed.done, [], "\(hostile)")
            XCTAssertEqual(failed.failures.count, 1, "\(hostile)")
            XCTAssertNil(fs2.snapshot()["tmp/pull-0"], "\(hostile): the staged file is removed")
        }
    }

    func test_aChunkOfZeros_isNeitherAskedNorWritten() throws {
        let fs = FakeFileSystem()
        fs.mkdir("tmp")
        let data = [UInt8](repeating: 0, count: 2 << 20) + random(100_000, seed: 3)
        let peers = Peers([1: .serve])
        serve(peers, [data])
        let outcome = ChunkPull(environment(fs, peers), announcer: 1, syncEach: false).run([job(0, data, fs: fs)])
        XCTAssertEqual(outcome.done, [0])
        XCTAssertEqual(fs.snapshot()["tmp/pull-0"]?.content, data)
        XCTAssertLessThan(peers.asked[1] ?? 0, chunks(of: data).count, "zero chunks of the maximum size are holes")
    }

    func test_chunksTheAnnouncerRefuses_failTheFileAsGone_andNothingIsLeftStaged() {
        let fs = FakeFileSystem()
        fs.mkdir("tmp")
        let good = random(10_000, seed: 4), changed = random(10_000, seed: 5)
        let peers = Peers([1: .serve])
        serve(peers, [good])   // the announcer no longer has `changed`'s chunks
        let outcome = ChunkPull(environment(fs, peers), announcer: 1, syncEach: false)
            .run([job(0, good, fs: fs), job(1, changed, fs: fs)])
        XCTAssertEqual(outcome.done, [0])
        let error = outcome.failures[1] as? PullError
        XCTAssertEqual(error?.gone, true, "\(String(describing: outcome.failures[1]))")
        XCTAssertNil(fs.snapshot()["tmp/pull-1"])
        XCTAssertEqual(fs.snapshot()["tmp/pull-0"]?.content, good)
    }

    func test_aPeerThatStopsAnswering_isLeftOut_andTheOthersServeEverything() {
        let fs = FakeFileSystem()
        fs.mkdir("tmp")
        let data = random(2 << 20, seed: 6)
        let peers = Peers([1: .silent, 2: .serve])
        serve(peers, [data])
        let started = Date()
        let outcome = ChunkPull(environment(fs, peers, timeout: 0.3), announcer: 1, syncEach: false).run([job(0, data, fs: fs)])
        XCTAssertEqual(outcome.done, [0], "\(outcome.failures)")
        XCTAssertEqual(fs.snapshot()["tmp/pull-0"]?.content, data)
        XCTAssertTrue(peers.stalled.contains(1))
        XCTAssertLessThan(Date().timeIntervalSince(started), 5, "one timeout, not one per chunk")
    }

    func test_aLostSession_movesItsRequestsToTheOtherPeers_andWithNoPeerLeftTheFilesFail() {
        let fs = FakeFileSystem()
        fs.mkdir("tmp")
        let data = random(1 << 20, seed: 7)
        let peers = Peers([1: .lose, 2: .serve])
        serve(peers, [data])
        // Peer 1's session is gone as soon as it is asked (and no longer listed afterwards).
        let env = environment(fs, peers)
        var gone = env
        gone.request = { peer, chunk, answer in
            if peer == 1 { peers.lock.lock(); peers.behaviour[1] = nil; peers.lock.unlock() }
            peers.request(peer, chunk, answer)
        }
        let outcome = ChunkPull(gone, announcer: 1, syncEach: false).run([job(0, data, fs: fs)])
        XCTAssertEqual(outcome.done, [0], "\(outcome.failures)")
        XCTAssertEqual(fs.snapshot()["tmp/pull-0"]?.content, data)

        let alone = Peers([:])
        let none = ChunkPull(environment(fs, alone), announcer: 1, syncEach: false).run([job(1, data, fs: fs)])
        XCTAssertEqual(none.done, [])
        XCTAssertNotNil(none.failures[1])
    }

    func test_aFullDisk_failsEveryFileOfThePull_asDiskFull_andRemovesWhatWasStaged() {
        let fs = FakeFileSystem()
        fs.mkdir("tmp")
        let files = (0..<20).map { random(20_000, seed: 10 + UInt64($0)) }
        let peers = Peers([1: .serve])
        serve(peers, files)
        let writes = NSLock()
        nonisolated(unsafe) var count = 0
        fs.fault = { op in
            guard op.kind == .write else { return nil }
            writes.lock(); defer { writes.unlock() }
            count += 1
            return count > 5 ? .fail(ENOSPC) : nil
        }
        let outcome = ChunkPull(environment(fs, peers), announcer: 1, syncEach: false)
            .run(files.enumerated().map { job($0, $1, fs: fs) })
        XCTAssertGreaterThan(outcome.failures.count, 10)
        XCTAssertTrue(outcome.failures.values.contains { "\($0)" == "disk full" })
        for key in outcome.failures.keys { XCTAssertNil(fs.snapshot()["tmp/pull-\(key)"], "pull-\(key) left behind") }
    }

    func test_piecesInMemory() {
        let fs = FakeFileSystem()
        let a = random(3000, seed: 20), b = random(5000, seed: 21)
        let peers = Peers([1: .serve, 2: .serve])
        serve(peers, [a, b])
        let outcome = ChunkPull(environment(fs, peers), announcer: 1, syncEach: false).run([
            .init(key: 0, chunks: chunks(of: a), destination: .memory),
            .init(key: 1, chunks: chunks(of: b), destination: .memory),
        ])
        XCTAssertEqual(outcome.memory[0], a)
        XCTAssertEqual(outcome.memory[1], b)
    }

    /// The answer handler of a request holds the request (to read its bytes): completing it must
    /// let both go, or every chunk of a pull stays in memory (1.1 GB of RSS for a 1 GiB file).
    func test_aCompletedRequest_isFreedWithItsBytes() {
        weak var freed: FolderExchange.PendingRequest?
        do {
            let p = FolderExchange.PendingRequest()
            p.onDone = { _ = p.bytes }
            p.complete([UInt8](repeating: 1, count: 1 << 20))
            freed = p
        }
        XCTAssertNil(freed)
    }

    /// A big pull waits a moment for every peer gossip announces, so a newcomer's first sync spreads
    /// over all of them instead of going wholly to the first session up.
    func test_aBigPull_waitsForTheAnnouncedPeers_andSpreadsOverThem() {
        let fs = FakeFileSystem()
        fs.mkdir("tmp")
        let data = random(12 << 20, seed: 30)
        let peers = Peers([1: .serve])
        serve(peers, [data])
        var env = environment(fs, peers)
        env.announced = { [1, 2] }
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.3) {
            peers.lock.lock(); peers.behaviour[2] = .serve; peers.lock.unlock()
        }
        let outcome = ChunkPull(env, announcer: 1, syncEach: false).run([job(0, data, fs: fs)])
        XCTAssertEqual(outcome.done, [0])
        XCTAssertEqual(fs.snapshot()["tmp/pull-0"]?.content, data)
        XCTAssertGreaterThan(peers.asked[2] ?? 0, chunks(of: data).count / 4, "the second peer served its share: \(peers.asked)")
    }

    /// Five peers that do not have the new file yet refuse its chunks at once; the writer serves
    /// them. The file arrives (refusals of peers that are behind are no failed attempts).
    func test_peersThatAreBehind_refuse_andTheWriterServesEverything() {
        let fs = FakeFileSystem()
        fs.mkdir("tmp")
        let data = random(3 << 20, seed: 40)
        let peers = Peers([1: .serve, 2: .refuse, 3: .refuse, 4: .refuse, 5: .refuse, 6: .refuse])
        serve(peers, [data])
        let outcome = ChunkPull(environment(fs, peers), announcer: 1, syncEach: false).run([job(0, data, fs: fs)])
        XCTAssertEqual(outcome.done, [0], "\(outcome.failures)")
        XCTAssertEqual(fs.snapshot()["tmp/pull-0"]?.content, data)
    }
}
