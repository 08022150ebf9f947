import SyncCore
import XCTest
@testable import SyncReplication

/// FolderModel as a state machine: each input, the directives it returns (no I/O, no sleeping —
/// time is passed in).
final class FolderModelTests: XCTestCase {
    let t0 = ContinuousClock.now
    let a: ShortDeviceID = 0xA, b: ShortDeviceID = 0xB

    func entry(_ path: String, _ seq: Int64, by device: ShortDeviceID = 0xB, value: UInt64 = 1) -> FileEntry {
        FileEntry(path: path, metadata: FileMetadata(kind: .file, size: 1, mode: 0o644, mtimeNs: 1, ctimeNs: 1, inode: 1),
                  version: VersionVector([.init(device: device, value: value)]), sequence: seq)
    }

    func batch(_ first: UInt64, _ last: UInt64, from origin: ShortDeviceID = 0xB, index: UInt64 = 7) -> FolderModel.Batch {
        .init(origin: origin, indexID: index, firstSequence: first, lastSequence: last,
              entries: (first...last).map { entry("f\($0)", Int64($0), by: origin) })
    }

    /// A with a session to B that said hello (B's index 7 at `announced`) and acknowledged A's index.
    func connected(announced: UInt64 = 5, sequence: UInt64 = 0) -> FolderModel {
        var m = FolderModel(me: a, indexID: 1, sequence: sequence)
        _ = m.sessionUp(b)
        _ = m.received(.hello(access: .readWrite, indexID: 7, sequence: announced), from: b, now: t0)
        _ = m.received(.indexAck(origin: a, indexID: 1, sequence: sequence), from: b, now: t0)
        return m
    }

    func applyID(_ d: [FolderModel.Directive]) -> FolderModel.BatchID? {
        for case let .apply(id, _, _) in d { return id }
        return nil
    }

    func test_onSessionUp_shouldSayHelloWithOurIndex() {
        var m = FolderModel(me: a, indexID: 1, sequence: 9)
        XCTAssertEqual(m.sessionUp(b), [.send(to: b, .hello(access: .readWrite, indexID: 1, sequence: 9))])
    }

    func test_onHello_shouldAcknowledgeHowFarWeHoldThePeersIndex() {
        var m = FolderModel(me: a, indexID: 1, sequence: 0, floors: [b: (7, 3)])
        _ = m.sessionUp(b)
        XCTAssertEqual(m.received(.hello(access: .readWrite, indexID: 7, sequence: 5), from: b, now: t0),
                       [.send(to: b, .indexAck(origin: b, indexID: 7, sequence: 3))])
        _ = m.sessionDown(b); _ = m.sessionUp(b)
        XCTAssertEqual(m.received(.hello(access: .readWrite, indexID: 8, sequence: 5), from: b, now: t0),
                       [.send(to: b, .indexAck(origin: b, indexID: 8, sequence: 0))], "a new index id starts over")
    }

    func test_onIndexAck_shouldReadOurIndexFromWhereThePeerIs_andOnlyOnce() {
        var m = FolderModel(me: a, indexID: 1, sequence: 4)
        _ = m.sessionUp(b)
        XCTAssertEqual(m.received(.indexAck(origin: a, indexID: 1, sequence: 2), from: b, now: t0),
                       [.readIndex(peer: b, after: 2, limit: 1000)])
        let read = m.indexRead(for: b, after: 2, [entry("x", 3, by: a), entry("y", 4, by: a)])
        XCTAssertEqual(read, [.send(to: b, .manifest(.init(origin: a, indexID: 1, firstSequence: 3, lastSequence: 4,
                                                             entries: [entry("x", 3, by: a), entry("y", 4, by: a)])))])
        XCTAssertEqual(m.indexRead(for: b, after: 2, [entry("x", 3, by: a)]), [], "a read that crossed another is dropped")
    }

    func test_onBatchApplied_shouldRecordTheFloorThenAcknowledge_andNotEchoItsVersionsBack() {
        var m = connected(sequence: 0)
        let d = m.received(.manifest(batch(1, 2)), from: b, now: t0)
        let id = try! XCTUnwrap(applyID(d))
        XCTAssertEqual(m.applied(id, .ok, now: t0), [.recordFloor(origin: b, indexID: 7, sequence: 2),
                                                     .send(to: b, .indexAck(origin: b, indexID: 7, sequence: 2))])
        XCTAssertEqual(m.applied(of: b), 2)
        // Our index now holds B's versions (recorded at our sequences 1, 2): they go back as a bare advance.
        _ = m.localIndexChanged(sequence: 2, digest: nil)
        let read = m.indexRead(for: b, after: 0, [entry("f1", 1, by: b), entry("f2", 2, by: b)])
        XCTAssertEqual(read, [.send(to: b, .manifest(.init(origin: a, indexID: 1, firstSequence: 1, lastSequence: 2, entries: [])))])
    }

    func test_onFailedApply_shouldNotAcknowledge_closeAfterBackoff_andBlockLaterBatchesOfTheOrigin() {
        var m = connected()
        let first = try! XCTUnwrap(applyID(m.received(.manifest(batch(1, 2)), from: b, now: t0)))
        _ = m.received(.manifest(batch(3, 4)), from: b, now: t0)
        let d = m.applied(first, .init(failed: ["f1": "EACCES"]), now: t0)
        XCTAssertEqual(d.first, .closeSession(b, reason: "resynchronizing after a failed apply", after: .milliseconds(500)))
        XCTAssertFalse(d.contains { if case .send(_, .indexAck) = $0 { true } else { false } })
        XCTAssertEqual(m.failing, ["f1": "EACCES"])
        XCTAssertFalse(m.isInSync(with: [b]), "wait is never in sync while a change fails")
        // The next batch of the same origin applies but is not acknowledged either: no gaps.
        let second = try! XCTUnwrap(applyID(d))
        XCTAssertEqual(m.applied(second, .ok, now: t0), [])
        XCTAssertEqual(m.applied(of: b), 0)
        // Redialled: the origin resends from the floor; failing again backs off longer.
        _ = m.sessionDown(b)
        _ = m.sessionUp(b)
        _ = m.received(.hello(access: .readWrite, indexID: 7, sequence: 4), from: b, now: t0)
        let again = try! XCTUnwrap(applyID(m.received(.manifest(batch(1, 4)), from: b, now: t0)))
        XCTAssertEqual(m.applied(again, .init(failed: ["f1": "EACCES"]), now: t0).first,
                       .closeSession(b, reason: "resynchronizing after a failed apply", after: .seconds(1)))
    }

    func test_aChangeThatAppliesLater_clearsItsFailure_andAdvancesTheFloor() {
        var m = connected()
        let id = try! XCTUnwrap(applyID(m.received(.manifest(batch(1, 2)), from: b, now: t0)))
        _ = m.applied(id, .init(failed: ["f1": "EACCES"]), now: t0)
        _ = m.sessionDown(b); _ = m.sessionUp(b)
        _ = m.received(.hello(access: .readWrite, indexID: 7, sequence: 2), from: b, now: t0)
        let retry = try! XCTUnwrap(applyID(m.received(.manifest(batch(1, 2)), from: b, now: t0)))
        XCTAssertEqual(m.applied(retry, .ok, now: t0).first, .recordFloor(origin: b, indexID: 7, sequence: 2))
        XCTAssertEqual(m.failing, [:])
    }

    func test_aReplayedOrOlderBatch_isRefused_andClosesTheSession() {
        var m = connected()
        let id = try! XCTUnwrap(applyID(m.received(.manifest(batch(1, 2)), from: b, now: t0)))
        // The same batch resent on a new session while the first copy applies: taken once, and
        // acknowledged on the session that is up when it is done.
        _ = m.sessionDown(b); _ = m.sessionUp(b)
        _ = m.received(.hello(access: .readWrite, indexID: 7, sequence: 2), from: b, now: t0)
        XCTAssertEqual(m.received(.manifest(batch(1, 2)), from: b, now: t0), [])
        XCTAssertEqual(m.applied(id, .ok, now: t0).last, .send(to: b, .indexAck(origin: b, indexID: 7, sequence: 2)))
        guard case .closeSession(b, let reason, .zero)? = m.received(.manifest(batch(1, 2)), from: b, now: t0).first else {
            return XCTFail("a replay is refused")
        }
        XCTAssertTrue(reason.contains("replayed"), reason)
    }

    func test_aLocalChangeOfAFailingPath_supersedesTheFailure() {
        var m = connected()
        let id = try! XCTUnwrap(applyID(m.received(.manifest(batch(1, 2)), from: b, now: t0)))
        _ = m.applied(id, .init(failed: ["f1": "EACCES", "f2": "EACCES"]), now: t0)
        _ = m.localIndexChanged(sequence: 1, digest: nil, changed: ["f1"])
        XCTAssertEqual(m.failing, ["f2": "EACCES"])
        XCTAssertEqual(m.applied(of: b), 0, "still not acknowledged: the origin resends it")
    }

    func test_digestsThatStayDifferentBetweenCaughtUpPeers_askForTheWholeIndex_bothWays_thenBackOff() {
        var m = connected(announced: 0, sequence: 3)
        _ = m.localIndexChanged(sequence: 3, digest: .init(sequence: 3, liveCount: 2, hash: [1]))
        _ = m.received(.indexAck(origin: a, indexID: 1, sequence: 3), from: b, now: t0)
        _ = m.received(.digest(.init(sequence: 0, liveCount: 2, hash: [2])), from: b, now: t0)
        XCTAssertEqual(m.tick(now: t0, still: true), [.send(to: b, .digest(.init(sequence: 3, liveCount: 2, hash: [1])))])
        XCTAssertEqual(m.tick(now: t0 + .seconds(1), still: true), [], "not before 2 s")
        XCTAssertEqual(m.tick(now: t0 + .seconds(2), still: false), [], "nor while something moves here")
        XCTAssertEqual(m.tick(now: t0 + .seconds(2), still: true), [.send(to: b, .indexAck(origin: b, indexID: 7, sequence: 0))],
                       "an acknowledgement of 0 asks for B's whole index")
        XCTAssertEqual(m.tick(now: t0 + .seconds(5), still: true), [], "at most every 10 s")
        // B's resent batches are below our floor: applied again, not refused as replays.
        guard case .apply? = m.received(.manifest(batch(1, 2)), from: b, now: t0).first else { return XCTFail("resend refused") }
        XCTAssertFalse(m.isInSync(with: [b]))
    }

    func test_aPeerAskingForOurWholeIndex_getsIt_andIsAskedForItsOwn() {
        var m = connected(announced: 2, sequence: 4)
        _ = m.indexRead(for: b, after: 0, (1...4).map { entry("x\($0)", Int64($0), by: a) })
        XCTAssertEqual(m.received(.indexAck(origin: a, indexID: 1, sequence: 0), from: b, now: t0),
                       [.readIndex(peer: b, after: 0, limit: 1000), .send(to: b, .indexAck(origin: b, indexID: 7, sequence: 0))])
        XCTAssertEqual(m.received(.indexAck(origin: a, indexID: 1, sequence: 0), from: b, now: t0),
                       [.readIndex(peer: b, after: 0, limit: 1000)], "asked once: no ping-pong")
    }

    func test_waitIsInSync_onlyWhenAppliedAcknowledgedAndDigestsAgree() {
        var m = connected(announced: 2, sequence: 1)
        _ = m.localIndexChanged(sequence: 1, digest: .init(sequence: 1, liveCount: 1, hash: [9]))
        _ = m.received(.indexAck(origin: a, indexID: 1, sequence: 1), from: b, now: t0)
        XCTAssertFalse(m.isInSync(with: [b]), "B announced 2, nothing applied")
        let id = try! XCTUnwrap(applyID(m.received(.manifest(batch(1, 2)), from: b, now: t0)))
        XCTAssertFalse(m.isInSync(with: [b]), "applying")
        _ = m.applied(id, .ok, now: t0)
        XCTAssertFalse(m.isInSync(with: [b]), "no digest from B yet")
        _ = m.received(.digest(.init(sequence: 2, liveCount: 1, hash: [8])), from: b, now: t0)
        XCTAssertFalse(m.isInSync(with: [b]), "digests differ")
        _ = m.received(.digest(.init(sequence: 2, liveCount: 1, hash: [9])), from: b, now: t0)
        XCTAssertTrue(m.isInSync(with: [b]))
        XCTAssertFalse(m.isInSync(with: [b, 0xC]), "a live member not connected")
    }

    func test_massDeletionGuard_countsASessionsBatchesTogether() {
        var m = connected(announced: 40)
        _ = m.received(.digest(.init(sequence: 40, liveCount: 2, hash: [1])), from: b, now: t0)
        let first = try! XCTUnwrap(applyID(m.received(.manifest(batch(1, 5)), from: b, now: t0)))
        XCTAssertNil(m.massDeletionHeld(first, deleting: 5, creating: 0, liveHere: 20), "5 deletions: under the minimum")
        _ = m.received(.manifest(batch(6, 12)), from: b, now: t0)
        let second = try! XCTUnwrap(applyID(m.applied(first, .init(deleted: 5), now: t0)))
        let held = try! XCTUnwrap(m.massDeletionHeld(second, deleting: 7, creating: 0, liveHere: 15))
        XCTAssertTrue(held.contains("would delete 12 of the 20"), held)
        m.deletionsAccepted = true
        XCTAssertNil(m.massDeletionHeld(second, deleting: 7, creating: 0, liveHere: 15), "accepted by the user")
    }

    func test_massDeletionGuard_doesNotCountDeletionsTheDigestAlreadyReflects() {
        var m = connected(announced: 12)
        // B deleted 11 of 20 on purpose and still holds 15 (it made some): its digest, taken after.
        _ = m.received(.digest(.init(sequence: 12, liveCount: 15, hash: [1])), from: b, now: t0)
        let id = try! XCTUnwrap(applyID(m.received(.manifest(batch(1, 12)), from: b, now: t0)))
        XCTAssertNil(m.massDeletionHeld(id, deleting: 11, creating: 0, liveHere: 20))
        // A peer that holds almost nothing (a wiped disk) is still held.
        var w = connected(announced: 12)
        _ = w.received(.digest(.init(sequence: 12, liveCount: 1, hash: [1])), from: b, now: t0)
        let wid = try! XCTUnwrap(applyID(w.received(.manifest(batch(1, 12)), from: b, now: t0)))
        XCTAssertNotNil(w.massDeletionHeld(wid, deleting: 11, creating: 0, liveHere: 20))
    }

    func test_readOnlyAndStorageDevices_neverSendTheirIndex() {
        for access in [FolderModel.Access.readOnly, .storage] {
            var m = FolderModel(me: a, indexID: 1, access: access, sequence: 5)
            _ = m.sessionUp(b)
            XCTAssertEqual(m.received(.indexAck(origin: a, indexID: 1, sequence: 0), from: b, now: t0), [])
        }
    }
}
