import Dispatch
import Foundation
import Logging
import SyncCore
import SyncSecurity
import SyncStore
import SyncWire
@testable import SyncDaemon
import XCTest

/// Stopping a folder's exchange (`syncd remove`, shutdown): sessions closed, later ones refused,
/// the apply in flight waited for — but never past the deadline.
final class FolderStopTests: XCTestCase {
    private var root = ""

    override func setUpWithError() throws {
        root = NSTemporaryDirectory() + "syncd-stop-\(UUID().uuidString.prefix(8))"
        try FolderPaths.prepare(root + "/data")
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: root) }

    private func makeExchange() throws -> FolderExchange {
        let store = try IndexStore(path: root + "/index.db")
        let secret = FolderSecret.generate()
        let keys = secret.keys
        let record = try store.addFolder(path: root + "/data", folderID: keys.folderIDString, access: keys.access.rawValue,
                                         secret: secret.text, chunkerVersion: Int(FastCDC.version))
        return try FolderExchange(record: record, keys: keys, store: store, device: 1, logger: Logger(label: "test"),
                                  replication: DaemonConfiguration(home: Home(path: root)).replication)
    }

    /// A session as the exchange sees it, recording what is sent on it and why it was closed.
    private final class Session: @unchecked Sendable {
        let lock = NSLock()
        var sent: [SessionMessage] = []
        var closed: [String] = []
        lazy var link: FolderExchange.PeerLink = {
            let link = FolderExchange.PeerLink(device: DeviceIdentity(privateKey: .init()).deviceID) { [unowned self] m in
                lock.withLock { sent.append(m) }
            }
            link.close = { [unowned self] reason in lock.withLock { closed.append(reason) } }
            return link
        }()
    }

    func test_stop_closesEverySession_refusesLaterOnes_andStopsAntiEntropy() throws {
        let exchange = try makeExchange()
        let open = Session()
        exchange.attach(open.link)
        XCTAssertTrue(exchange.isConnected(open.link.device.short))

        XCTAssertTrue(exchange.stop(waitingUntil: .now() + 5))
        XCTAssertEqual(open.closed, [FolderExchange.removedReason])
        XCTAssertFalse(exchange.isConnected(open.link.device.short))
        XCTAssertEqual(exchange.digestTimer?.isCancelled, true)
        XCTAssertEqual(exchange.handle(.digest(.init(sequence: 1, liveCount: 1, hash: Array(repeating: 0, count: 32))), from: open.link),
                       .reply([]), "what a closing session still delivers is dropped")
        XCTAssertNil(exchange.lock.withLock { exchange.model.sessions[open.link.device.short]?.theirDigest })

        // Accepted or dialled just before the stop, established just after: closed, never attached.
        let late = Session()
        exchange.attach(late.link)
        XCTAssertEqual(late.closed, [FolderExchange.removedReason])
        XCTAssertTrue(late.sent.isEmpty, "no hello on a session of a stopped folder")
        XCTAssertFalse(exchange.isConnected(late.link.device.short))
    }

    func test_stop_waitsForTheApplyInFlight() throws {
        let exchange = try makeExchange()
        let applying = DispatchSemaphore(value: 0)
        let done = Box(false)
        exchange.work.async {
            applying.signal()
            Thread.sleep(forTimeInterval: 0.3)   // an apply placing files
            done.value = true
        }
        applying.wait()
        XCTAssertTrue(exchange.stop(waitingUntil: .now() + 5))
        XCTAssertTrue(done.value, "stop returned before the apply in flight finished")
    }

    func test_stop_givesUpAtItsDeadline() throws {
        let exchange = try makeExchange()
        let applying = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        exchange.work.async { applying.signal(); _ = release.wait(timeout: .now() + 10) }
        applying.wait()
        let started = Date()
        XCTAssertFalse(exchange.stop(waitingUntil: .now() + 0.2))
        XCTAssertLessThan(Date().timeIntervalSince(started), 2)
        release.signal()
    }
}
