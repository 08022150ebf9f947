import Foundation
import XCTest

/// Issue 14, parts 1 and 8, as an operator meets them: a daemon declared in a file (folders
/// included), `syncd add` run twice, the home's permissions, and a cluster that restarts together.
final class OperationsIntegrationTests: XCTestCase, ClusterTesting {
    /// `syncd daemon ARGS` run to its end (killed after `timeout`), with `environment` added.
    private func runDaemon(_ h: DaemonHarness, _ arguments: [String], environment: [String: String] = [:],
                           timeout: TimeInterval = 15) throws -> DaemonHarness.Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: DaemonHarness.binary)
        p.arguments = ["daemon", "--home", h.home, "--no-lan-beacon"] + arguments
        p.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("SYNCD_") }.merging(environment) { $1 }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        let timedOut = p.isRunning
        if timedOut { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        let e = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let o = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return .init(status: timedOut ? -1 : p.terminationStatus, stdout: o, stderr: (timedOut ? "(still running after \(timeout) s) " : "") + e)
    }

    private func write(_ text: String, to path: String, mode: mode_t = 0o600) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        chmod(path, mode)
    }

    private func newSecret(_ h: DaemonHarness) throws -> String {
        let r = try h.cli(["secret"])
        XCTAssertEqual(r.status, 0, r.stderr)
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    // MARK: part 1: declared configuration

    /// A container's way: the folder and its secret file are in the config, nobody runs `syncd add`.
    func test_aFolderDeclaredInTheConfig_syncsWithAPeer_withoutSyncdAdd_andSurvivesARestart() throws {
        let a = try DaemonHarness(name: "decla")
        try a.startDaemon()
        let seed = try XCTUnwrap(a.status().listen)
        let add = try a.cli(["add", a.root + "/data", "--secret"])
        XCTAssertEqual(add.status, 0, add.stderr)
        let secret = String(add.stdout.split(whereSeparator: \.isWhitespace).last ?? "")

        let b = try DaemonHarness(name: "declb")
        try write(secret + "\n", to: b.root + "/data.secret")
        try write("""
            # syncd daemon --config
            join: \(seed)
            trash_days: 7
            folders:
              - path: \(b.root)/data
                secret_file: data.secret
            """, to: b.root + "/syncd.yaml")
        try b.startDaemon(extra: ["--config", b.root + "/syncd.yaml"])
        XCTAssertEqual(try b.status().folders.map(\.path), [b.root + "/data"], b.daemonLog)
        XCTAssertTrue(b.daemonLog.contains("added folder \(b.root)/data from the configuration"), b.daemonLog)

        try "from a".write(toFile: a.root + "/data/a.txt", atomically: true, encoding: .utf8)
        try waitInSync(a)
        XCTAssertEqual(try? String(contentsOfFile: b.root + "/data/a.txt", encoding: .utf8), "from a")

        // Restarted with the same file: the folder is there already, nothing is added twice.
        b.stopDaemon()
        try b.startDaemon(extra: ["--config", b.root + "/syncd.yaml"])
        XCTAssertEqual(try b.status().folders.map(\.path), [b.root + "/data"])
        try "from b".write(toFile: b.root + "/data/b.txt", atomically: true, encoding: .utf8)
        try waitInSync(b)
        XCTAssertEqual(try? String(contentsOfFile: a.root + "/data/b.txt", encoding: .utf8), "from b")
        // And `syncd add` of the declared folder, as a provisioning script might still do, is a no-op.
        let again = try b.cli(["add", b.root + "/data", "--secret", secret])
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertEqual(try b.status().folders.count, 1)
    }

    /// The default file is `<home>/syncd.yaml`; a declared path already shared with another secret
    /// stops the daemon (it cannot be both), and leaves the shared folder as it was.
    func test_theHomesSyncdYaml_isReadByDefault_andADeclaredFolderSharedWithAnotherSecretStopsTheDaemon() throws {
        let h = try DaemonHarness(name: "declc")
        try h.startDaemon()
        let first = try h.cli(["add", h.root + "/data", "--secret"])
        XCTAssertEqual(first.status, 0, first.stderr)
        let folderID = try XCTUnwrap(h.status().folders.first?.folderId)
        h.stopDaemon()
        let other = try newSecret(h)
        try write("folders:\n  - path: \(h.root)/data\n    secret: \(other)\n", to: h.home + "/syncd.yaml")
        let r = try runDaemon(h, ["--listen", "127.0.0.1:0"])
        XCTAssertNotEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("\(h.root)/data is already a shared folder, with another secret"), r.stderr)
        XCTAssertFalse(r.stderr.contains(other), "a secret is never printed: \(r.stderr)")

        try write("folders: []\n", to: h.home + "/syncd.yaml")
        try h.startDaemon()
        XCTAssertEqual(try h.status().folders.map(\.folderId), [folderID])
    }

    func test_aConfigError_namesTheFileAndKey_andTheDaemonExitsBeforeCreatingAnything() throws {
        let h = try DaemonHarness(name: "cfgerr")
        let file = h.root + "/syncd.yaml"
        let secret = try newSecret(h)
        let cases: [(yaml: String, message: String)] = [
            ("trash_days: lots\n", "config file \(file): trash_days: expected a number"),
            ("max_conflicts: 0\n", "config file \(file): max_conflicts must be at least 1"),
            ("join:\n  - 10.0.0.1:port\n", "config file \(file): join 10.0.0.1:port is not HOST:PORT"),
            ("trash-days: 3\n", "config file \(file): unknown key trash-days (did you mean trash_days?)"),
            ("listen: [a\n", "config file \(file): line 2"),
            ("folders:\n  - path: \(h.root)/data\n", "config file \(file): folders[0]: needs secret or secret_file"),
            ("folders:\n  - path: \(h.root)/data\n    secret_file: nowhere.secret\n",
             "config file \(file): folders[0].secret_file: cannot read \(h.root)/nowhere.secret: no such file"),
            ("folders:\n  - path: \(h.root)/data\n    secret: \(secret.dropLast(3))\n", "config file \(file): folders[0].secret: not a folder secret"),
        ]
        for c in cases {
            try write(c.yaml, to: file)
            let r = try runDaemon(h, ["--config", file, "--listen", "127.0.0.1:0"])
            XCTAssertEqual(r.status, 1, "\(c.yaml): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(c.message), "\(c.yaml): expected \(c.message) in: \(r.stderr)")
            XCTAssertFalse(r.stderr.contains(String(secret.dropLast(3))), "a secret is never printed: \(r.stderr)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: h.home), "\(c.yaml): the home was created")
            XCTAssertFalse(FileManager.default.fileExists(atPath: h.root + "/data"), "\(c.yaml): the folder was created")
        }
        // A variable is named as the variable.
        try write("trash_days: 3\n", to: file)
        let r = try runDaemon(h, ["--listen", "127.0.0.1:0"], environment: ["SYNCD_CONFIG": file, "SYNCD_MAX_CONFLICTS": "many"])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("SYNCD_MAX_CONFLICTS: expected a whole number"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: h.home))
    }

    /// The same path and secret twice is what scripts and config files do: it succeeds and
    /// changes nothing. A different secret, or the same secret at another path, stays an error.
    func test_syncdAdd_isIdempotentForTheSamePathAndSecret_only() throws {
        let h = try DaemonHarness(name: "addtwice")
        try h.startDaemon()
        let first = try h.cli(["add", h.root + "/data", "--secret"])
        XCTAssertEqual(first.status, 0, first.stderr)
        let secret = String(first.stdout.split(whereSeparator: \.isWhitespace).last ?? "")
        let again = try h.cli(["add", h.root + "/data", "--secret", secret])
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertTrue(again.stdout.contains("Already sharing \(h.root)/data"), again.stdout)
        let viaOtherSpelling = try h.cli(["add", h.root + "/./data/", "--secret", secret])
        XCTAssertEqual(viaOtherSpelling.status, 0, viaOtherSpelling.stderr)
        XCTAssertEqual(try h.status().folders.count, 1)

        let other = try h.cli(["add", h.root + "/data", "--secret", try newSecret(h)])
        XCTAssertNotEqual(other.status, 0)
        XCTAssertTrue(other.stderr.contains("already a shared folder, with another secret"), other.stderr)
        let generated = try h.cli(["add", h.root + "/data", "--secret"])
        XCTAssertNotEqual(generated.status, 0, "a new secret for a shared path is not the same secret")
        let elsewhere = try h.cli(["add", h.root + "/elsewhere", "--secret", secret])
        XCTAssertNotEqual(elsewhere.status, 0)
        XCTAssertTrue(elsewhere.stderr.contains("already shared at \(h.root)/data"), elsewhere.stderr)
        XCTAssertEqual(try h.status().folders.count, 1)
    }

    /// The home holds the folder secrets (index.db and its -wal and -shm), the device key and the
    /// control socket: owner-only whatever the umask, even in a home that exists already as 0755.
    func test_homeFiles_areOwnerOnly_underUmask0_inAPreExisting0755Home() throws {
        let h = try DaemonHarness(name: "umask", unprivileged: true)
        let peer = try DaemonHarness(name: "umaskpeer", unprivileged: true)
        if !FileManager.default.fileExists(atPath: h.home) { try FileManager.default.createDirectory(atPath: h.home, withIntermediateDirectories: false) }
        chmod(h.home, 0o755)
        try peer.startDaemon()
        try h.startDaemon(extra: ["--join", try XCTUnwrap(peer.status().listen)], umask: 0)
        let add = try h.cli(["add", h.root + "/data", "--secret"])
        XCTAssertEqual(add.status, 0, add.stderr)
        try h.write(Data("x".utf8), to: h.root + "/data/x.txt")
        try h.waitForFolder(timeout: 5, "the file is indexed") { $0.localFiles == 1 }
        func checkHome(_ when: String, expecting names: [String]) {
            var st = stat()
            XCTAssertEqual(stat(h.home, &st), 0)
            XCTAssertEqual(st.st_mode & 0o777, 0o700, "\(when): the home is mode \(String(st.st_mode & 0o777, radix: 8))")
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: h.home)) ?? []
            for name in names { XCTAssertTrue(entries.contains(name), "\(when): \(name) missing from \(entries)") }
            for name in entries {
                XCTAssertEqual(lstat(h.home + "/" + name, &st), 0)
                XCTAssertEqual(st.st_mode & 0o077, 0, "\(when): \(name) is mode \(String(st.st_mode & 0o777, radix: 8))")
            }
        }
        checkHome("running", expecting: ["index.db", "index.db-wal", "index.db-shm", "device.key", "daemon.lock", "syncd.sock"])
        h.stopDaemon()
        checkHome("stopped", expecting: ["members.json"])
    }

    // MARK: part 8: bootstrap that holds

    /// Every member stopping at once used to leave each one's members.json empty (each saw the
    /// others leave), so the restarted cluster knew nobody. Now each remembers the others.
    func test_membersSnapshot_survivesEveryMemberStoppingTogether_andTheClusterRejoinsWithoutSeeds() throws {
        let a = try DaemonHarness(name: "snapa"), b = try DaemonHarness(name: "snapb"), c = try DaemonHarness(name: "snapc")
        try a.startDaemon()
        let seed = try XCTUnwrap(a.status().listen)
        try b.startDaemon(extra: ["--join", seed])
        try c.startDaemon(extra: ["--join", seed])
        let all = [a, b, c]
        let addresses = try all.map { try XCTUnwrap($0.status().listen) }
        try waitUntil("all three see all three alive", timeout: 15) {
            try all.allSatisfy { h in try self.alive(h) == Set(addresses) }
        }
        DaemonHarness.stopTogether(all)
        for (i, h) in all.enumerated() {
            let known = try snapshot(h)
            XCTAssertEqual(Set(known), Set(addresses).subtracting([addresses[i]]), "\(h.home)/members.json")
        }
        // The same addresses again, no --join anywhere: they find each other from their snapshots.
        for (i, h) in all.enumerated() { try h.startDaemon(listen: addresses[i]) }
        try waitUntil("the restarted cluster is whole again", timeout: 20) {
            try all.allSatisfy { h in try self.alive(h) == Set(addresses) }
        }
    }

    func test_aSeedThatCannotBeJoined_isAWarning() throws {
        let h = try DaemonHarness(name: "deadseed")
        try h.startDaemon(extra: ["--join", "127.0.0.1:1"])
        try waitUntil("the failing seed is reported", timeout: 10) {
            h.daemonLog.split(separator: "\n").contains { $0.contains("warning") && $0.contains("seed 127.0.0.1:1 cannot be joined") }
        }
    }

    func test_anInvalidJoin_stopsTheDaemonBeforeItCreatesAnything() throws {
        let h = try DaemonHarness(name: "badjoin")
        let r = try runDaemon(h, ["--listen", "127.0.0.1:0", "--join", "10.0.0.1:port"])
        XCTAssertNotEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("--join 10.0.0.1:port is not HOST:PORT"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: h.home))
    }

    /// A port in use is reported with its address and protocol — sessions are TCP, gossip UDP on
    /// the same port — before the home exists.
    func test_bindErrors_nameTheAddressAndProtocol_andCreateNothing() throws {
        let h = try DaemonHarness(name: "bind")
        let tcp = try bound(SOCK_STREAM)
        defer { close(tcp.fd) }
        var r = try runDaemon(h, ["--listen", "127.0.0.1:\(tcp.port)"])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("cannot listen for peer sessions on TCP 127.0.0.1:\(tcp.port): Address already in use"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: h.home), "the home was created")

        let udp = try bound(SOCK_DGRAM)
        defer { close(udp.fd) }
        r = try runDaemon(h, ["--listen", "127.0.0.1:\(udp.port)"])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("cannot listen for gossip on UDP 127.0.0.1:\(udp.port): Address already in use"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: h.home), "the home was created")

        // The same home twice: its port is taken too, but the message is about the daemon.
        try h.startDaemon()
        r = try runDaemon(h, ["--listen", try XCTUnwrap(h.status().listen)])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("another syncd daemon is already running with home \(h.home)"), r.stderr)
    }

    /// Listening on every address, the daemon says which one it announces, and why.
    func test_listeningOnTheWildcard_saysWhichAddressItAnnounces() throws {
        let h = try DaemonHarness(name: "wild")
        try h.startDaemon(listen: "0.0.0.0:0")
        XCTAssertTrue(h.daemonLog.contains("announced to other members as"), h.daemonLog)
    }

    // MARK: helpers

    private func alive(_ h: DaemonHarness) throws -> Set<String> {
        struct Peers: Decodable { struct Member: Decodable { var address: String; var status: String }; var members: [Member] }
        let r = try h.cli(["peers", "--json"])
        let peers = try JSONDecoder().decode(Peers.self, from: Data(r.stdout.utf8))
        return Set(peers.members.filter { $0.status == "alive" }.map(\.address))
    }

    private func snapshot(_ h: DaemonHarness) throws -> [String] {
        let data = try XCTUnwrap(FileManager.default.contents(atPath: h.home + "/members.json"), "no members.json")
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: [String]])
        return object["members"] ?? []
    }

    private func waitUntil(_ what: String, timeout: TimeInterval, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try condition() { return }
            usleep(100_000)
        }
        XCTFail("\(what) did not happen within \(timeout) s")
    }

    /// A socket bound to a free port of 127.0.0.1 without SO_REUSEADDR (listening, for TCP).
    private func bound(_ type: __socket_type) throws -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(type.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard ok, type != SOCK_STREAM || listen(fd, 8) == 0 else { throw DaemonHarness.HarnessError("cannot bind a test socket") }
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }
}
