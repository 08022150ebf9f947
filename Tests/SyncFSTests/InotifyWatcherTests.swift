import Foundation
import Logging
@testable import SyncFS
import XCTest

/// Real inotify on a temporary directory. Waits are bounded expectations, never fixed sleeps.
final class InotifyWatcherTests: XCTestCase {
    private var root: String!
    private var watcher: InotifyWatcher!
    private let seen = Seen()

    final class Seen: @unchecked Sendable {
        private let lock = NSLock()
        private var paths = Set<String>()
        private var all = false
        func add(_ b: WatchBatch) { lock.lock(); paths.formUnion(b.paths); all = all || b.rescanAll; lock.unlock() }
        func snapshot() -> Set<String> { lock.lock(); defer { lock.unlock() }; return paths }
        func clear() { lock.lock(); paths = []; lock.unlock() }
    }

    override func setUpWithError() throws {
        root = NSTemporaryDirectory() + "watch-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root + "/existing/deep", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/.syncd/tmp", withIntermediateDirectories: true)
        var options = InotifyWatcher.Options()
        options.writeSettle = 300_000_000
        let seen = self.seen
        watcher = InotifyWatcher(root: root, options: options, logger: Logger(label: "test")) { seen.add($0) }
        try watcher.start()
    }

    override func tearDownWithError() throws {
        watcher.stop()
        try? FileManager.default.removeItem(atPath: root)
    }

    private func waitFor(_ paths: Set<String>, timeout: TimeInterval = 5, file: StaticString = #filePath, line: UInt = #line) {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if paths.isSubset(of: seen.snapshot()) { return }
            usleep(5_000)
        }
        XCTFail("missing events for \(paths.subtracting(seen.snapshot())); got \(seen.snapshot())", file: file, line: line)
    }

    func test_closeWrite_inExistingSubdirectory_isReported() throws {
        try Data("x".utf8).write(to: URL(fileURLWithPath: root + "/existing/deep/f.txt"))
        waitFor(["existing/deep/f.txt"])
    }

    func test_newDirectory_getsWatchedAndItsEarlyContentIsCovered() throws {
        try FileManager.default.createDirectory(atPath: root + "/new/inner", withIntermediateDirectories: true)
        waitFor(["new"])  // the whole new directory is rescanned, covering files made before its watch
        seen.clear()
        usleep(50_000)
        try Data("y".utf8).write(to: URL(fileURLWithPath: root + "/new/inner/later.txt"))
        waitFor(["new/inner/later.txt"])
    }

    func test_renameOfDirectory_keepsWatchPathsCorrect() throws {
        try FileManager.default.moveItem(atPath: root + "/existing", toPath: root + "/renamed")
        waitFor(["existing", "renamed"])
        seen.clear()
        try Data("z".utf8).write(to: URL(fileURLWithPath: root + "/renamed/deep/after.txt"))
        waitFor(["renamed/deep/after.txt"])
    }

    func test_deleteAndChmod_areReported() throws {
        let p = root + "/existing/f"
        try Data("1".utf8).write(to: URL(fileURLWithPath: p))
        waitFor(["existing/f"])
        seen.clear()
        chmod(p, 0o600)
        waitFor(["existing/f"])
        seen.clear()
        unlink(p)
        waitFor(["existing/f"])
    }

    func test_fileHeldOpen_isReportedAfterSettleNotMidWrite() throws {
        let fd = open(root + "/slow.log", O_WRONLY | O_CREAT, 0o644)
        defer { close(fd) }
        _ = write(fd, "partial", 7)
        usleep(100_000)
        XCTAssertFalse(seen.snapshot().contains("slow.log"), "no report while the writer may still be writing")
        waitFor(["slow.log"])  // reported once writeSettle passes even though the file is still open
    }

    /// `flush` (what `syncd wait` asks first): a hard link made just before — IN_CREATE with no
    /// IN_CLOSE_WRITE, held to settle — is handed over before `flush` returns, not after the settle.
    func test_flush_handsOverSettlingPathsBeforeItReturns() throws {
        let outside = root + "/../obj-link-\(UUID().uuidString)"
        try Data("obj".utf8).write(to: URL(fileURLWithPath: outside))
        defer { unlink(outside) }
        XCTAssertEqual(link(outside, root + "/object"), 0)
        XCTAssertTrue(watcher.flush())
        XCTAssertTrue(seen.snapshot().contains("object"), "flush returned before the linked file was handed over: \(seen.snapshot())")
    }

    func test_stateDirectory_isNeverReported() throws {
        try Data("t".utf8).write(to: URL(fileURLWithPath: root + "/.syncd/tmp/x"))
        try Data("v".utf8).write(to: URL(fileURLWithPath: root + "/visible"))
        waitFor(["visible"])
        XCTAssertFalse(seen.snapshot().contains { $0.hasPrefix(".syncd") })
    }

    // Names are bytes: reported as path text (RelativePath), found and watched by their bytes.

    /// `root/` + raw name bytes, NUL-terminated, built without the code under test.
    private func raw(_ name: [UInt8]) -> [CChar] {
        (Array(root.utf8) + [UInt8(ascii: "/")] + name + [0]).map { CChar(bitPattern: $0) }
    }

    private func create(_ name: [UInt8]) {
        let fd = open(raw(name), O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        XCTAssertGreaterThanOrEqual(fd, 0, "create \(name)")
        _ = write(fd, "x", 1)
        close(fd)
    }

    private let nfc = Array("caf\u{E9}".utf8), nfd = Array("cafe\u{301}".utf8), latin1 = Array("caf".utf8) + [0xE9]

    func test_namesThatDifferOnlyByNormalization_orAreNotUTF8_areDistinctPaths() throws {
        create(nfc)
        create(nfd)
        create(latin1)
        waitFor(["caf%C3%A9", "cafe%CC%81", "caf%E9"])
    }

    func test_directoriesNamedByNonUTF8Bytes_areWatched() throws {
        XCTAssertEqual(mkdir(raw([0xE9]), 0o755), 0)
        waitFor(["%E9"])
        seen.clear()
        usleep(50_000)
        create([0xE9, UInt8(ascii: "/")] + nfd)
        waitFor(["%E9/cafe%CC%81"])  // the new directory's watch was added by its bytes

        // At start-up the walk finds directories by their bytes too.
        XCTAssertEqual(mkdir(raw(Array("existing/d".utf8) + [0xFF]), 0o755), 0)
        let other = Seen()
        let second = InotifyWatcher(root: root, logger: Logger(label: "test")) { other.add($0) }
        try second.start()
        defer { second.stop() }
        create(Array("existing/d".utf8) + [0xFF, UInt8(ascii: "/")] + latin1)
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline && !other.snapshot().contains("existing/d%FF/caf%E9") { usleep(5_000) }
        XCTAssertTrue(other.snapshot().contains("existing/d%FF/caf%E9"), "got \(other.snapshot())")
    }
}
