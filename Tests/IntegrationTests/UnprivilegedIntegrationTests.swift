import Foundation
import XCTest

/// Daemons run as the service user (DaemonHarness, unprivileged mode), the way users deploy
/// syncd: root may set any socket option and open any file, so tests run only as root would hide
/// every permission bug.
final class UnprivilegedIntegrationTests: XCTestCase, ClusterTesting {
    /// The real user id of a running process, from /proc (nil when it is gone).
    private func uid(of process: Process?) -> uid_t? {
        guard let pid = process?.processIdentifier,
              let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Uid:") }) else { return nil }
        return line.split(whereSeparator: \.isWhitespace).dropFirst().first.flatMap { uid_t($0) }
    }

    func test_twoUnprivilegedPeers_syncAFileADirectoryAndEditsBothWays() throws {
        let (d, _) = try cluster(2, name: "nobody", unprivileged: true)
        let expected = geteuid() == 0 ? DaemonHarness.serviceUser.uid : geteuid()
        for h in d { XCTAssertEqual(uid(of: h.process), expected, "the daemon runs as the service user") }
        let a = d[0].root + "/data", b = d[1].root + "/data"

        // A → B: a file and a directory with a file in it.
        try d[0].write(Data("hello".utf8), to: a + "/hello.txt")
        try d[0].write(Data("deep".utf8), to: a + "/docs/deep/notes.txt")
        try waitInSync(d[0])
        XCTAssertEqual(tree(b), tree(a))
        XCTAssertEqual(tree(b)["docs/deep"], "dir 755")
        XCTAssertEqual(try String(contentsOfFile: b + "/docs/deep/notes.txt", encoding: .utf8), "deep")

        // B → A: B edits A's file (B's daemon wrote it, so B's user owns it) and adds a directory.
        try d[1].write(Data("hello from B".utf8), to: b + "/hello.txt")
        try d[1].write(Data("new".utf8), to: b + "/fromB/n.txt")
        try waitInSync(d[1])
        XCTAssertEqual(try String(contentsOfFile: a + "/hello.txt", encoding: .utf8), "hello from B")
        XCTAssertEqual(tree(a), tree(b))

        // A edits in place (same inode, owner unchanged) a file B's daemon placed there.
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: a + "/fromB/n.txt"))
        handle.seekToEndOfFile()
        handle.write(Data(" and more".utf8))
        handle.closeFile()
        try waitInSync(d[0])
        XCTAssertEqual(try String(contentsOfFile: b + "/fromB/n.txt", encoding: .utf8), "new and more")
        XCTAssertEqual(tree(b), tree(a))
    }

    /// The home holds the folder secrets (index.db) and the device key: nobody else may read them.
    func test_unprivilegedDaemon_homeFilesAreNotWorldReadable() throws {
        let h = try DaemonHarness(name: "home", unprivileged: true)
        try h.startDaemon()
        let add = try h.cli(["add", h.root + "/data", "--secret"])
        XCTAssertEqual(add.status, 0, add.stderr)
        try h.write(Data("x".utf8), to: h.root + "/data/x.txt")
        try h.waitForFolder(timeout: 5, "the file is indexed") { $0.localFiles == 1 }
        for name in ["index.db", "index.db-wal", "index.db-shm", "device.key"] {
            var st = stat()
            XCTAssertEqual(lstat(h.home + "/" + name, &st), 0, "\(name) exists while the daemon runs")
            XCTAssertEqual(st.st_mode & 0o004, 0, "\(name) is world-readable: mode \(String(st.st_mode & 0o777, radix: 8))")
        }
    }
}
