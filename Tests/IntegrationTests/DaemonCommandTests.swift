import ArgumentParser
import SyncDaemon
@testable import syncd
import XCTest

/// `syncd daemon`'s options override `DaemonConfiguration`'s defaults and have none of their own.
final class DaemonCommandTests: XCTestCase {
    /// No SYNCD_* variable and a home without a syncd.yaml: the command line alone.
    private var environment: [String: String] = [:]
    private var scratch = ""

    override func setUpWithError() throws {
        scratch = NSTemporaryDirectory() + "syncd-cmd-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        environment = ["SYNCD_HOME": scratch + "/home"]
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: scratch) }

    private func parse(_ arguments: [String]) throws -> DaemonConfiguration {
        let command = try Syncd.parseAsRoot(["daemon"] + arguments)
        return try XCTUnwrap(command as? DaemonCommand).resolve(environment: environment).configuration
    }

    func test_noOptions_giveExactlyTheConfigurationsDefaults() throws {
        XCTAssertEqual(try parse([]), DaemonConfiguration(home: Home(path: scratch + "/home")))
    }

    func test_eachOption_overridesItsField_andNothingElse() throws {
        let defaults = DaemonConfiguration(home: Home(path: scratch + "/home"))
        let keyFile = scratch + "/cluster.key"
        try Data((String(repeating: "cd", count: 32) + "\n").utf8).write(to: URL(fileURLWithPath: keyFile))
        let tokenFile = scratch + "/http.token"
        try Data("0123456789abcdef0123\n".utf8).write(to: URL(fileURLWithPath: tokenFile))
        let cases: [(option: String, arguments: [String], change: (inout DaemonConfiguration) -> Void)] = [
            ("home", ["/srv/syncd-test"], { $0.home = Home(path: "/srv/syncd-test") }),
            ("listen", ["127.0.0.1:9000"], { $0.network.listen = "127.0.0.1:9000" }),
            ("join", ["10.0.0.1:7700", "--join", "10.0.0.2:7700"], { $0.network.join = ["10.0.0.1:7700", "10.0.0.2:7700"] }),
            ("advertise", ["192.0.2.1:7700"], { $0.network.advertise = "192.0.2.1:7700" }),
            ("gossip-key", [String(repeating: "ab", count: 32)], { $0.network.gossipKey = String(repeating: "ab", count: 32) }),
            ("gossip-key-file", [keyFile], { $0.network.gossipKey = String(repeating: "cd", count: 32) }),
            ("beacon-port", ["17701"], { $0.network.beaconPort = 17701 }),
            ("no-lan-beacon", [], { $0.network.beaconPort = nil }),
            ("no-compression", [], { $0.network.compression = false }),
            ("trash-days", ["2.5"], { $0.replication.trashDays = 2.5 }),
            ("max-conflicts", ["3"], { $0.replication.maxConflicts = 3 }),
            ("rescan-interval", ["120"], { $0.scanning.rescanInterval = 120 }),
            ("keepalive-interval", ["1"], { $0.keepalive.interval = .seconds(1) }),
            ("keepalive-timeout", ["9"], { $0.keepalive.timeout = .seconds(9) }),
            ("control-group", ["0"], { $0.control.group = "0" }),
            ("http", ["127.0.0.1:9090"], { $0.http.listen = "127.0.0.1:9090" }),
            ("http-token-file", [tokenFile], { $0.http.token = "0123456789abcdef0123" }),
            ("on-apply", ["echo applied"], { $0.hooks.onApply = "echo applied" }),
            ("on-apply-timeout", ["5"], { $0.hooks.timeout = 5 }),
        ]
        for c in cases {
            var expected = defaults
            c.change(&expected)
            XCTAssertNotEqual(expected, defaults, "--\(c.option): the test value must differ from the default")
            XCTAssertEqual(try parse(["--\(c.option)"] + c.arguments), expected, "--\(c.option)")
        }
        // Every option of `syncd daemon` is covered, except the ones that are not configuration.
        let help = DaemonCommand.helpMessage(columns: 1000)
        let options = Set(help.matches(of: /--([a-z][a-z-]+)/).map { String($0.output.1) })
        // (--compression is the default, and turns compression back on over the file or environment: below.)
        XCTAssertEqual(options.subtracting(["log-level", "log-format", "rebuild-index", "config", "help", "version", "compression"]), Set(cases.map(\.option)))
        // …and every one of them (and --log-level) can be declared in the file and the environment too.
        XCTAssertEqual(Set(DeclaredOption.allCases.map(\.longName)),
                       options.subtracting(["home", "rebuild-index", "config", "help", "version", "no-compression"]))
        XCTAssertEqual(try parse(["--compression"]), defaults)
        environment["SYNCD_COMPRESSION"] = "false"
        defer { environment["SYNCD_COMPRESSION"] = nil }
        XCTAssertFalse(try parse([]).network.compression, "SYNCD_COMPRESSION=false turns it off")
        XCTAssertTrue(try parse(["--compression"]).network.compression, "the flag beats the environment")
    }

    func test_help_showsTheConfigurationsDefaults() {
        let help = DaemonCommand.helpMessage(columns: 1000)
        let defaults = DaemonConfiguration(home: Home(path: "/"))
        XCTAssertTrue(help.contains("(default: \(defaults.network.listen))"), help)
        XCTAssertTrue(help.contains("(default: \(defaults.replication.maxConflicts))"), help)
        XCTAssertTrue(help.contains("(default: 30)"), "trash days: \(help)")
        XCTAssertTrue(help.contains("(default: 3600)"), "rescan interval: \(help)")
    }

    func test_invalidValues_areRefusedWithTheOptionsName() {
        for (arguments, message) in [(["--keepalive-interval", "5", "--keepalive-timeout", "5"], "--keepalive-timeout must be longer"),
                                     (["--max-conflicts", "0"], "--max-conflicts must be at least 1"),
                                     (["--listen", "nowhere"], "nowhere is not HOST:PORT"),
                                     (["--log-level", "loud"], "unknown log level loud"),
                                     (["--log-format", "xml"], "unknown log format xml (text, json)"),
                                     (["--control-group", "no-such-group-here"], "--control-group no-such-group-here is not a group")] {
            XCTAssertThrowsError(try parse(arguments)) { error in
                XCTAssertTrue(Syncd.message(for: error).contains(message), "\(arguments): \(Syncd.message(for: error))")
            }
        }
    }

    /// A seed that cannot be parsed used to be dropped silently (`compactMap`), so a typo left the
    /// daemon alone in a cluster of one: it is refused at start instead.
    func test_invalidJoin_isRefusedAtStart() {
        for seed in ["10.0.0.1", "10.0.0.1:port", "10.0.0.1:0", ":7700", "10.0.0.1:70000", "host name:7700", "::1:7700"] {
            XCTAssertThrowsError(try parse(["--join", "10.0.0.9:7700", "--join", seed]), seed) { error in
                XCTAssertTrue(Syncd.message(for: error).contains("--join \(seed) is not HOST:PORT"), "\(seed): \(Syncd.message(for: error))")
            }
        }
        for seed in ["10.0.0.1:7700", "seed.example:7700", "[fd00::1]:7700"] {
            XCTAssertEqual(try parse(["--join", seed]).network.join, [seed])
        }
        XCTAssertThrowsError(try parse(["--advertise", "10.0.0.1"])) { error in
            XCTAssertTrue(Syncd.message(for: error).contains("--advertise 10.0.0.1 is not HOST:PORT"), Syncd.message(for: error))
        }
    }

    func test_gossipKey_isCheckedBeforeStart_andTheKeyFileIsTheOneAwayFromArgv() throws {
        XCTAssertThrowsError(try parse(["--gossip-key", "short"])) { error in
            XCTAssertTrue(Syncd.message(for: error).contains("--gossip-key must be 32 bytes"), Syncd.message(for: error))
        }
        let keyFile = scratch + "/key"
        XCTAssertThrowsError(try parse(["--gossip-key-file", keyFile])) { error in
            XCTAssertTrue(Syncd.message(for: error).contains("--gossip-key-file: cannot read \(keyFile): no such file"), Syncd.message(for: error))
        }
        try Data((String(repeating: "ab", count: 32) + "\n").utf8).write(to: URL(fileURLWithPath: keyFile))
        XCTAssertEqual(try parse(["--gossip-key-file", keyFile]).network.gossipKey, String(repeating: "ab", count: 32))
        XCTAssertThrowsError(try parse(["--gossip-key-file", keyFile, "--gossip-key", String(repeating: "cd", count: 32)])) { error in
            XCTAssertTrue(Syncd.message(for: error).contains("--gossip-key and --gossip-key-file are both set"), Syncd.message(for: error))
        }
    }

    /// A non-loopback HTTP address needs a token, and the token only comes from a file.
    func test_http_offLoopback_needsATokenFile_ofSixteenCharactersOrMore() throws {
        XCTAssertNil(try parse([]).http.listen, "off unless configured")
        XCTAssertEqual(try parse(["--http", "127.0.0.1:0"]).http.listen, "127.0.0.1:0", "loopback may go without a token")
        XCTAssertEqual(try parse(["--http", "[::1]:9090"]).http.token, nil)
        XCTAssertThrowsError(try parse(["--http", "0.0.0.0:9090"])) { error in
            XCTAssertTrue(Syncd.message(for: error).contains("--http 0.0.0.0:9090 is not a loopback address: give a token with --http-token-file"),
                          Syncd.message(for: error))
        }
        let tokenFile = scratch + "/token"
        try Data("short\n".utf8).write(to: URL(fileURLWithPath: tokenFile))
        XCTAssertThrowsError(try parse(["--http", "0.0.0.0:9090", "--http-token-file", tokenFile])) { error in
            XCTAssertTrue(Syncd.message(for: error).contains("--http-token-file holds a token shorter than 16 characters"), Syncd.message(for: error))
        }
        try Data("0123456789abcdef0123\n".utf8).write(to: URL(fileURLWithPath: tokenFile))
        XCTAssertEqual(try parse(["--http", "0.0.0.0:9090", "--http-token-file", tokenFile]).http.token, "0123456789abcdef0123")
        XCTAssertThrowsError(try Syncd.parseAsRoot(["daemon", "--http-token", "0123456789abcdef0123"]), "no option puts the token on argv")
    }
}
