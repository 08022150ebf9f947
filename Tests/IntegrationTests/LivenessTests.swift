@preconcurrency import Crypto
import Foundation
import Logging
import NIOPosix
@testable import SyncDaemon
import SyncFS
import SyncGossip
import SyncSecurity
import XCTest

/// What makes the daemon redial: gossip finding a member alive again, and the session table that
/// closes the quiet sessions of that member. No daemon processes, no sleeps for timers.
final class LivenessTests: XCTestCase {
    func member(_ name: UInt64, _ status: MemberStatus, uid: UInt64 = 1, meta: [UInt8] = []) -> MemberState {
        MemberState(name: name, uid: uid, incarnation: 1, status: status, endpoint: Endpoint(host: "127.0.0.1", port: 1), meta: meta)
    }

    func test_cameAlive_isAReturnToLife_notARoutineUpdate() {
        let before = [member(1, .alive), member(2, .suspect), member(3, .dead), member(4, .left), member(5, .alive)]
        XCTAssertTrue(GossipService.cameAlive(member(9, .alive), before: before), "a new member")
        XCTAssertTrue(GossipService.cameAlive(member(2, .alive), before: before), "back from suspect")
        XCTAssertTrue(GossipService.cameAlive(member(3, .alive), before: before), "back from dead")
        XCTAssertTrue(GossipService.cameAlive(member(4, .alive), before: before), "back after leaving")
        XCTAssertTrue(GossipService.cameAlive(member(5, .alive, uid: 2), before: before), "restarted (new uid)")
        XCTAssertFalse(GossipService.cameAlive(member(1, .alive, meta: [1]), before: before), "new metadata is routine")
        XCTAssertFalse(GossipService.cameAlive(member(1, .suspect), before: before))
        XCTAssertFalse(GossipService.cameAlive(member(9, .dead), before: before))
    }

    func test_sessionTable_closesOnlyTheQuietSessionsOfThatDevice_andReportsTheLargestRTT() {
        let table = SessionTable()
        let closed = Box<[String]>([])
        final class Handle {}
        let handles = (0..<3).map { _ in Handle() }
        for (i, (device, quiet)) in [(UInt64(7), Duration.seconds(5)), (7, .milliseconds(100)), (8, .seconds(9))].enumerated() {
            table.register(ObjectIdentifier(handles[i]), .init(device: device, folderID: [UInt8(i)], rtt: nil) { longerThan, reason in
                if quiet > longerThan { closed.value.append("\(device)/\(i): \(reason)") }
            })
        }
        XCTAssertNil(table.rtt(of: 7))
        table.update(ObjectIdentifier(handles[0]), rtt: .milliseconds(3))
        table.update(ObjectIdentifier(handles[1]), rtt: .milliseconds(40))
        XCTAssertEqual(table.rtt(of: 7), .milliseconds(40))
        XCTAssertNil(table.rtt(of: 8))

        table.closeQuiet(device: 7, longerThan: .seconds(2), reason: "found again")
        XCTAssertEqual(closed.value, ["7/0: found again"], "the busy session and the other device's stay")

        table.remove(ObjectIdentifier(handles[1]))
        XCTAssertEqual(table.rtt(of: 7), .milliseconds(3))
        XCTAssertEqual(table.sessionCount(with: 7), 1)
    }

    /// Two real gossip shells on loopback: the hook the daemon redials from fires when a member
    /// joins and again when it comes back after leaving — not for its routine metadata updates.
    func test_gossipService_reportsAMemberComingAlive_onJoinAndOnReturn() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let dir = NSTemporaryDirectory() + "syncd-alive-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let logger = Logger(label: "test")

        struct Node { let gossip: GossipService; let sessions: SessionServer; let endpoint: Endpoint }
        func node(_ name: UInt64, meta: Box<[UInt8]>, seeds: [Endpoint]) throws -> Node {
            let sessions = SessionServer(group: group, identity: DeviceIdentity(privateKey: .init()), logger: logger,
                                         keepalive: DaemonConfiguration(home: Home(path: dir)).keepalive, table: SessionTable()) { [:] }
            let bound = try sessions.start(listen: "127.0.0.1:0")
            let endpoint = try XCTUnwrap(Endpoint(bound))
            let gossip = GossipService(group: group, settings: .fastLocal, name: name, endpoint: endpoint,
                                       cipher: try GossipCipher(keyText: nil), snapshotPath: dir + "/\(name)-\(UUID().uuidString.prefix(4)).json",
                                       beaconPort: nil, logger: logger, metaSource: { meta.value })
            sessions.gossip = gossip
            return Node(gossip: gossip, sessions: sessions, endpoint: endpoint)
        }

        let revived = Box<[UInt64]>([])
        let metaA = Box<[UInt8]>([1]), metaB = Box<[UInt8]>([1])
        let a = try node(1, meta: metaA, seeds: [])
        a.gossip.onMemberAlive = { m in revived.value.append(m.name) }
        try a.gossip.start(host: "127.0.0.1", port: Int(a.endpoint.port), seeds: [])
        defer { a.gossip.stop(); a.sessions.stop() }

        let b = try node(2, meta: metaB, seeds: [a.endpoint])
        try b.gossip.start(host: "127.0.0.1", port: Int(b.endpoint.port), seeds: [a.endpoint])
        try wait("A sees B join") { revived.value == [2] }

        metaB.value = [2]   // routine: new metadata
        b.gossip.metaChanged()
        try wait("A sees B's new metadata") { a.gossip.members.first { $0.name == 2 }?.meta == [2] }
        XCTAssertEqual(revived.value, [2], "a metadata update is not a return to life")

        b.gossip.stop(); b.sessions.stop()
        try wait("A sees B leave") { a.gossip.members.first { $0.name == 2 }?.status == .left }
        let again = try node(2, meta: metaB, seeds: [a.endpoint])
        try again.gossip.start(host: "127.0.0.1", port: Int(again.endpoint.port), seeds: [a.endpoint])
        defer { again.gossip.stop(); again.sessions.stop() }
        try wait("A sees B come back") { revived.value == [2, 2] }
    }

    private func wait(_ what: String, timeout: TimeInterval = 10, _ condition: () -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !condition() {
            guard Date() < deadline else { return XCTFail("\(what): not within \(timeout) s") }
            usleep(20_000)
        }
    }
}

final class Box<T>: @unchecked Sendable {
    private let lock = Lock()
    private var _value: T
    init(_ value: T) { _value = value }
    var value: T {
        get { lock.withLock { _value } }
        set { lock.withLock { _value = newValue } }
    }
}
