import SyncCore
@testable import SyncReplication
import XCTest

private let p1: ShortDeviceID = 0x0101
private let p2: ShortDeviceID = 0x0202
private let t0 = ContinuousClock.now

private func chunk(_ n: UInt64, size: UInt32 = 100) -> ChunkRef {
    ChunkRef(id: ChunkID(w0: n, w1: 0, w2: 0, w3: 0), size: size)
}

private func file(_ path: String, _ chunks: [ChunkRef]) -> PullPlanner.FileToFetch {
    PullPlanner.FileToFetch(path: path, chunks: chunks)
}

private struct Sent: Equatable {
    var peer: ShortDeviceID
    var chunk: ChunkRef
    var id: PullPlanner.RequestID
}

private extension Array where Element == PullPlanner.Directive {
    var requests: [Sent] {
        compactMap {
            if case let .request(peer, chunk, id) = $0 { Sent(peer: peer, chunk: chunk, id: id) } else { nil }
        }
    }

    var copies: [PullPlanner.Directive] {
        filter { if case .copyLocal = $0 { true } else { false } }
    }
}

final class PullPlannerTests: XCTestCase {
    private func planner(window: Int = 16, bytes: Int = 1 << 20, attempts: Int = 5, local: Set<ChunkID> = [],
                         seed: UInt64 = 1) -> PullPlanner {
        PullPlanner(configuration: .init(window: window, maxOutstandingBytes: bytes, maxAttempts: attempts),
                    localChunks: local, seed: seed)
    }

    /// Answers a `copyLocal` the way a shell whose writes succeed would.
    private func confirm(_ directives: [PullPlanner.Directive], in planner: inout PullPlanner,
                         ok: Bool = true) -> [PullPlanner.Directive] {
        var out: [PullPlanner.Directive] = []
        for case let .copyLocal(ref, path, offset) in directives {
            out += planner.copied(ref, toPath: path, offset: offset, ok: ok, now: t0)
        }
        return out
    }

    func test_add_shouldCopyLocalChunks_insteadOfRequestingThem() {
        var planner = planner(local: [chunk(1).id])
        _ = planner.peerConnected(p1, inventory: .everything, now: t0)
        let out = planner.add([file("f", [chunk(1), chunk(2, size: 50), chunk(1)])], now: t0)
        XCTAssertEqual(out.copies, [.copyLocal(chunk(1), toPath: "f", offset: 0),
                                    .copyLocal(chunk(1), toPath: "f", offset: 150)])
        XCTAssertEqual(out.requests.map(\.chunk), [chunk(2, size: 50)])
    }

    func test_add_shouldSpreadRequestsOverEveryPeerThatHasTheChunks() {
        var planner = planner()
        _ = planner.peerConnected(p1, inventory: .everything, now: t0)
        _ = planner.peerConnected(p2, inventory: .everything, now: t0)
        let sent = planner.add([file("f", (1...6).map { chunk($0) })], now: t0).requests
        XCTAssertEqual(sent.count, 6)
        XCTAssertEqual(sent.filter { $0.peer == p1 }.count, 3)
        XCTAssertEqual(sent.filter { $0.peer == p2 }.count, 3)
        XCTAssertEqual(Set(sent.map(\.id)).count, 6)
    }

    func test_add_shouldOnlyAskPeersThatHaveTheChunk() {
        var planner = planner()
        _ = planner.peerConnected(p1, inventory: .chunks([chunk(1).id]), now: t0)
        _ = planner.peerConnected(p2, inventory: .announced([FileEntry(path: "g", metadata: FileMetadata(
            kind: .file, size: 100, mode: 0o644, mtimeNs: 0, ctimeNs: 0, inode: 0), chunks: [chunk(2)])]), now: t0)
        let sent = planner.add([file("f", [chunk(1), chunk(2)])], now: t0).requests
        XCTAssertEqual(sent.map { [$0.peer: $0.chunk] }, [[p1: chunk(1)], [p2: chunk(2)]])
    }

    func test_requests_shouldRespectThePerPeerWindow() {
        var planner = planner(window: 2)
        _ = planner.peerConnected(p1, inventory: .everything, now: t0)
        let first = planner.add([file("f", (1...5).map { chunk($0) })], now: t0).requests
        XCTAssertEqual(first.map(\.chunk), [chunk(1), chunk(2)])
        let next = planner.received(first[0].id, ok: true, now: t0)
        XCTAssertEqual(next.copies, [.copyLocal(chunk(1), toPath: "f", offset: 0)])
        XCTAssertEqual(next.requests.map(\.chunk), [chunk(3)])
        XCTAssertEqual(planner.outstandingRequests(to: p1), 2)
    }

    func test_requests_shouldRespectTheByteBudget_butAlwaysLetOneThrough() {
        var planner = planner(bytes: 250)
        _ = planner.peerConnected(p1, inventory: .everything, now: t0)
        let sent = planner.add([file("f", [chunk(1), chunk(2), chunk(3), chunk(4, size: 1000)])], now: t0).requests
        XCTAssertEqual(sent.map(\.chunk), [chunk(1), chunk(2)])
        XCTAssertEqual(planner.outstandingRequestBytes, 200)
        XCTAssertEqual(planner.received(sent[0].id, ok: true, now: t0).requests.map(\.chunk), [chunk(3)])
        XCTAssertEqual(planner.received(sent[1].id, ok: true, now: t0).requests, [])
        XCTAssertEqual(planner.outstandingRequests, 1)
        XCTAssertEqual(planner.tick(now: t0), [], "the large chunk waits for the budget")
        XCTAssertEqual(planner.received(3, ok: true, now: t0).requests.map(\.chunk), [chunk(4, size: 1000)],
                       "a chunk above the budget goes out alone")
    }

    func test_tick_shouldRetryATimedOutRequestOnAnotherPeer() {
        var planner = planner()
        _ = planner.peerConnected(p1, inventory: .everything, now: t0)
        _ = planner.peerConnected(p2, inventory: .everything, now: t0)
        let first = planner.add([file("f", [chunk(1)])], now: t0).requests[0]
        XCTAssertEqual(planner.tick(now: t0 + .seconds(29)), [])
        let retried = planner.tick(now: t0 + .seconds(30)).requests
        XCTAssertEqual(retried.count, 1)
        XCTAssertEqual(retried[0].chunk, chunk(1))
        XCTAssertNotEqual(retried[0].peer, first.peer)
        XCTAssertEqual(planner.received(first.id, ok: true, now: t0 + .seconds(31)), [], "a late answer is ignored")
        XCTAssertEqual(planner.outstandingRequests, 1)
    }

    func test_tick_shouldRetryTheSamePeer_whenItIsTheOnlyOneWithTheChunk() {
        var planner = planner()
        _ = planner.peerConnected(p1, inventory: .everything, now: t0)
        _ = planner.add([file("f", [chunk(1)])], now: t0)
        XCTAssertEqual(planner.tick(now: t0 + .seconds(30)).requests.map(\.peer), [p1])
    }

    func test_peerDisconnected_shouldMoveItsRequestsToOtherPeers() {
        var planner = planner()
        _ = planner.peerConnected(p1, inventory: .everything, now: t0)
        _ = planner.peerConnected(p2, inventory: .everything, now: t0)
        let sent = planner.add([file("f", (1...4).map { chunk($0) })], now: t0).requests
        let lost = sent.filter { $0.peer == p1 }.map(\.chunk)
        let moved = planner.peerDisconnected(p1, now: t0).requests
        XCTAssertEqual(moved.map(\.chunk), lost)
        XCTAssertTrue(moved.allSatisfy { $0.peer == p2 })
        XCTAssertEqual(planner.outstandingRequests(to: p2), 4)
        XCTAssertEqual(planner.received(sent.first { $0.peer == p1 }!.id, ok: true, now: t0), [])
    }

    func test_add_shouldRequestAChunkOnce_whenSeveralFilesNeedIt() {
        var planner = planner()
        _ = planner.peerConnected(p1, inventory: .everything, now: t0)
        let sent = planner.add([file("f", [chunk(1), chunk(1)]), file("g", [chunk(1)])], now: t0).requests
        XCTAssertEqual(sent.map(\.chunk), [chunk(1)])
        let out = planner.received(sent[0].id, ok: true, now: t0)
        XCTAssertEqual(out.copies, [.copyLocal(chunk(1), toPath: "f", offset: 0),
                                    .copyLocal(chunk(1), toPath: "f", offset: 100),
                                    .copyLocal(chunk(1), toPath: "g", offset: 0)])
        XCTAssertEqual(confirm(out, in: &planner), [.fileComplete(path: "f"), .fileComplete(path: "g")])
        XCTAssertTrue(planner.isFinished)
    }

    func test_file_shouldCompleteOnlyWhenEveryChunkArrivedAndWasWritten() {
        var planner = planner()
        _ = planner.peerConnected(p1, inventory: .everything, now: t0)
        let sent = planner.add([file("f", [chunk(1), chunk(2)])], now: t0).requests
        let first = planner.received(sent[0].id, ok: true, now: t0)
        XCTAssertEqual(confirm(first, in: &planner), [])
        let second = planner.received(sent[1].id, ok: true, now: t0)
        XCTAssertFalse(planner.isFinished, "not before the write is confirmed")
        XCTAssertEqual(confirm(second, in: &planner), [.fileComplete(path: "f")])
        XCTAssertTrue(planner.isFinished)
    }

    func test_add_shouldCompleteAnEmptyFileAtOnce() {
        var planner = planner()
        XCTAssertEqual(planner.add([file("empty", [])], now: t0), [.fileComplete(path: "empty")])
    }

    func test_file_shouldWaitWithoutRetrying_whenNoPeerHasAChunk() {
        var planner = planner()
        _ = planner.peerConnected(p1, inventory: .chunks([chunk(1).id]), now: t0)
        let sent = planner.add([file("f", [chunk(1), chunk(2)]), file("g", [chunk(2)])], now: t0).requests
        XCTAssertEqual(sent.map(\.chunk), [chunk(1)])
        XCTAssertEqual(planner.pending, [.init(path: "f", missing: [chunk(2).id]),
                                         .init(path: "g", missing: [chunk(2).id])])
        _ = confirm(planner.received(sent[0].id, ok: true, now: t0), in: &planner)
        for second in 1...100 {
            XCTAssertEqual(planner.tick(now: t0 + .seconds(second)), [], "nothing to do until a peer has it")
        }
        let late = planner.peerConnected(p2, inventory: .chunks([chunk(2).id]), now: t0 + .seconds(101)).requests
        XCTAssertEqual(late.map { [$0.peer: $0.chunk] }, [[p2: chunk(2)]])
        XCTAssertEqual(planner.pending, [])
    }

    func test_pending_shouldListEveryFile_whenNoPeerIsConnected() {
        var planner = planner()
        XCTAssertEqual(planner.add([file("f", [chunk(1)])], now: t0), [])
        XCTAssertEqual(planner.pending, [.init(path: "f", missing: [chunk(1).id])])
        XCTAssertEqual(planner.peerConnected(p1, inventory: .everything, now: t0).requests.map(\.chunk), [chunk(1)])
    }

    func test_received_shouldTryAnotherPeer_whenOneRefuses_andFailTheFileAfterMaxAttempts() {
        var planner = planner(attempts: 3)
        _ = planner.peerConnected(p1, inventory: .everything, now: t0)
        _ = planner.peerConnected(p2, inventory: .everything, now: t0)
        var sent = planner.add([file("f", [chunk(1)]), file("g", [chunk(2)])], now: t0).requests
        let refused = sent.first { $0.chunk == chunk(1) }!
        sent = planner.received(refused.id, ok: false, now: t0).requests
        XCTAssertEqual(sent.map(\.chunk), [chunk(1)])
        XCTAssertNotEqual(sent[0].peer, refused.peer)
        sent = planner.received(sent[0].id, ok: false, now: t0).requests
        XCTAssertEqual(sent.count, 1, "every holder failed once: go round again")
        let failed = planner.received(sent[0].id, ok: false, now: t0)
        XCTAssertEqual(failed, [.fileFailed(path: "f", reason: .chunkUnavailable(chunk(1).id, attempts: 3))])
        XCTAssertEqual(planner.outstandingRequests, 1, "g still fetching")
    }

    func test_copied_shouldFetchTheChunk_whenTheLocalCopyFails() {
        var planner = planner(local: [chunk(1).id])
        _ = planner.peerConnected(p1, inventory: .everything, now: t0)
        let copy = planner.add([file("f", [chunk(1)])], now: t0)
        XCTAssertEqual(copy, [.copyLocal(chunk(1), toPath: "f", offset: 0)])
        let fetch = confirm(copy, in: &planner, ok: false).requests
        XCTAssertEqual(fetch.map(\.chunk), [chunk(1)])
        XCTAssertEqual(confirm(planner.received(fetch[0].id, ok: true, now: t0), in: &planner),
                       [.fileComplete(path: "f")])
    }

    func test_cancel_shouldFreeTheWindow() {
        var planner = planner(window: 1)
        _ = planner.peerConnected(p1, inventory: .everything, now: t0)
        let sent = planner.add([file("f", [chunk(1)]), file("g", [chunk(2)])], now: t0).requests
        XCTAssertEqual(sent.map(\.chunk), [chunk(1)])
        planner.cancel("f")
        XCTAssertEqual(planner.tick(now: t0).requests.map(\.chunk), [chunk(2)])
        XCTAssertEqual(planner.received(sent[0].id, ok: true, now: t0), [])
    }

    func test_ties_shouldBreakBySeed_deterministically() {
        func firstPeer(seed: UInt64) -> [ShortDeviceID] {
            var planner = planner(seed: seed)
            _ = planner.peerConnected(p1, inventory: .everything, now: t0)
            _ = planner.peerConnected(p2, inventory: .everything, now: t0)
            return planner.add([file("f", (1...8).map { chunk($0) })], now: t0).requests.map(\.peer)
        }
        XCTAssertEqual(firstPeer(seed: 9), firstPeer(seed: 9))
        XCTAssertEqual(Set((0..<16).map { firstPeer(seed: $0)[0] }), [p1, p2], "different seeds pick differently")
    }

    /// Peers that are behind refuse a new chunk at once: that is no failed attempt, and the chunk
    /// goes on to the peer that has it — five quick refusals must not fail what the writer serves.
    func test_notHeld_isNoFailedAttempt_whileAnotherPeerMayHaveIt_andFailsTheFileWhenNoneHas() {
        let peers: [ShortDeviceID] = [1, 2, 3, 4, 5, 6, 7]
        var planner = planner(attempts: 2)
        for p in peers { _ = planner.peerConnected(p, inventory: .everything, now: t0) }
        var out = planner.add([file("f", [chunk(1)])], now: t0)
        var asked: [ShortDeviceID] = []
        while let r = out.requests.first {
            asked.append(r.peer)
            out = planner.notHeld(r.id, now: t0)
            if asked.count < peers.count {
                XCTAssertFalse(out.contains { if case .fileFailed = $0 { true } else { false } }, "failed after \(asked.count) refusals")
            }
        }
        XCTAssertEqual(asked.sorted(), peers, "every peer is asked once, none twice")
        XCTAssertEqual(out, [.fileFailed(path: "f", reason: .chunkUnavailable(chunk(1).id, attempts: 1))])
    }

    /// A local chunk that is not there after all (its file changed since it was indexed) is
    /// fetched instead, and does not count towards failing the file.
    func test_localMiss_isFetched_andNotCountedAsAWriteFailure() {
        let ids = (1...6).map { chunk(UInt64($0)) }
        var planner = planner(attempts: 2, local: Set(ids.map(\.id)))
        _ = planner.peerConnected(p1, inventory: .everything, now: t0)
        let out = planner.add([file("f", ids)], now: t0)
        var requests: [Sent] = []
        for case let .copyLocal(ref, path, offset) in out {
            let next = planner.copied(ref, toPath: path, offset: offset, ok: false, localMiss: true, now: t0)
            XCTAssertFalse(next.contains { if case .fileFailed = $0 { true } else { false } })
            requests += next.requests
        }
        XCTAssertEqual(Set(requests.map(\.chunk)), Set(ids))
    }

    // MARK: swarm

    /// Once a peer has announced chunks, the chunks it announced go to it, and a peer asked on
    /// speculation (the writer) gets at most `speculativeWindow` requests.
    func test_announcedChunks_goToTheirAnnouncer_andSpeculationIsHeldToItsWindow() {
        var planner = PullPlanner(configuration: .init(window: 16, maxOutstandingBytes: 1 << 20, speculativeWindow: 1), seed: 1)
        _ = planner.peerConnected(p1, inventory: .everything, now: t0)
        _ = planner.peerConnected(p2, inventory: .likely, now: t0)
        XCTAssertEqual(planner.peerAnnounced(p2, chunks: [chunk(3).id], now: t0), [])
        let sent = planner.add([file("f", (1...4).map { chunk($0) })], now: t0).requests
        XCTAssertEqual(sent.map { [$0.peer: $0.chunk] }, [[p2: chunk(3)], [p1: chunk(1)]])
        let next = planner.received(sent[1].id, ok: true, now: t0).requests
        XCTAssertEqual(next.map { [$0.peer: $0.chunk] }, [[p1: chunk(2)]])
    }

    /// A `.likely` peer that refuses a chunk is behind: from then on it is asked only for what it
    /// announces, and a chunk it refused is asked of it again once it announces it.
    func test_likelyPeer_thatRefuses_isAskedOnlyForWhatItAnnounces() {
        var planner = planner(window: 2)
        _ = planner.peerConnected(p1, inventory: .everything, now: t0)
        _ = planner.peerConnected(p2, inventory: .likely, now: t0)
        let sent = planner.add([file("f", (1...8).map { chunk($0) })], now: t0).requests
        XCTAssertEqual(sent.filter { $0.peer == p1 }.count, 2)
        XCTAssertEqual(sent.filter { $0.peer == p2 }.count, 2)
        let refused = sent.first { $0.peer == p2 }!
        XCTAssertEqual(planner.notHeld(refused.id, now: t0), [], "the writer's window is full, and p2 is not asked on speculation again")
        let other = sent.last { $0.peer == p2 }!
        XCTAssertEqual(planner.received(other.id, ok: false, now: t0).requests, [], "p2 takes nothing unannounced")
        let announced = planner.peerAnnounced(p2, chunks: [refused.chunk.id, chunk(8).id], now: t0).requests
        XCTAssertEqual(Set(announced.map(\.chunk)), [refused.chunk, chunk(8)])
        XCTAssertEqual(Set(announced.map(\.peer)), [p2])
        let fromWriter = planner.received(sent.first { $0.peer == p1 }!.id, ok: true, now: t0).requests
        XCTAssertEqual(fromWriter.map(\.peer), [p1])
    }

    /// Runs of `shuffleRun` chunks keep their order inside; the runs come in seeded order.
    func test_shuffleRun_keepsRunsTogether_inSeededOrder() {
        func order(seed: UInt64) -> [ChunkRef] {
            var planner = PullPlanner(configuration: .init(window: 64, maxOutstandingBytes: 1 << 20, shuffleRun: 4), seed: seed)
            _ = planner.peerConnected(p1, inventory: .everything, now: t0)
            return planner.add([file("f", (1...16).map { chunk($0) })], now: t0).requests.map(\.chunk)
        }
        let first = order(seed: 3)
        XCTAssertEqual(Set(first), Set((1...16).map { chunk($0) }))
        for run in stride(from: 0, to: 16, by: 4) {
            let ids = first[run..<run + 4].map { $0.id.w0 }
            XCTAssertEqual(ids, Array(ids[0]..<ids[0] + 4), "a run stays in order")
        }
        XCTAssertEqual(order(seed: 3), first)
        XCTAssertTrue((4...20).contains { order(seed: UInt64($0)) != first }, "other seeds, other orders")
    }

    /// Four receivers pull the same 256 new chunks from one writer and from each other, every
    /// peer uploading at most two chunks a round, announcing what they receive. The writer must
    /// upload at most twice the data, and all must finish within twice the rounds one receiver
    /// alone takes (issue 13's swarm targets, here on the pure planner).
    func test_swarm_writerUploadsAtMostTwiceTheData_andAllFinishWithinTwiceTheTimeOfOne() {
        let count = 256, capacity = 2
        func run(receivers: [ShortDeviceID]) -> (rounds: Int, writerUploads: Int) {
            let writer: ShortDeviceID = 1
            let data = (1...count).map { chunk(UInt64($0), size: 1000) }
            var planners: [ShortDeviceID: PullPlanner] = [:]
            var have: [ShortDeviceID: Set<ChunkID>] = [writer: Set(data.map(\.id))]
            var inbox: [ShortDeviceID: [(from: ShortDeviceID, sent: Sent)]] = [:]
            var announcements: [(ShortDeviceID, ChunkID)] = []
            func enqueue(_ from: ShortDeviceID, _ directives: [PullPlanner.Directive]) {
                for r in directives.requests { inbox[r.peer, default: []].append((from, r)) }
            }
            for r in receivers {
                var p = PullPlanner(configuration: .init(window: 16, maxOutstandingBytes: 1 << 30, speculativeWindow: 2, shuffleRun: 4),
                                    seed: UInt64(r) * 7919)
                _ = p.peerConnected(writer, inventory: .everything, now: t0)
                for o in receivers where o != r { _ = p.peerConnected(o, inventory: .likely, now: t0) }
                have[r] = []
                planners[r] = p
                enqueue(r, planners[r]!.add([file("f", data)], now: t0))
            }
            var uploads = 0, rounds = 0
            while planners.values.contains(where: { !$0.isFinished }) && rounds < 10_000 {
                rounds += 1
                for (r, id) in announcements {
                    for o in receivers where o != r { enqueue(o, planners[o]!.peerAnnounced(r, chunks: [id], now: t0)) }
                }
                announcements = []
                for server in [writer] + receivers {
                    var served = 0
                    while served < capacity, let (to, request) = inbox[server]?.first {
                        inbox[server]!.removeFirst()
                        if have[server]!.contains(request.chunk.id) {
                            served += 1
                            if server == writer { uploads += 1 }
                            var out = planners[to]!.received(request.id, ok: true, now: t0)
                            out += confirm(out, in: &planners[to]!)
                            enqueue(to, out)
                            if have[to]!.insert(request.chunk.id).inserted { announcements.append((to, request.chunk.id)) }
                        } else {
                            enqueue(to, planners[to]!.notHeld(request.id, now: t0))
                        }
                    }
                }
            }
            XCTAssertTrue(planners.values.allSatisfy(\.isFinished), "every receiver completes")
            return (rounds, uploads)
        }
        let alone = run(receivers: [2])
        let swarm = run(receivers: [2, 3, 4, 5])
        XCTAssertEqual(alone.writerUploads, count)
        XCTAssertLessThanOrEqual(swarm.writerUploads, 2 * count, "the writer uploads at most twice the data")
        XCTAssertLessThanOrEqual(swarm.rounds, 2 * alone.rounds, "all have it within twice the time one alone takes")
    }
}
