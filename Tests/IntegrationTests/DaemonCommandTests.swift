import ArgumentParser
import SyncDaemon
@testable import syncd
import XCTest

/// `syncd daemon`'s options override `DaemonConfiguration`'s defaults and have none of their own.
final class DaemonCommandTests: XCTestCase {
    private func parse(_ arguments: [String]) throws -> DaemonConfiguration {
        let command = try Syncd.parseAsRoot(["daemon"] + arguments)
        return try XCTUnwrap(command as? DaemonCommand).daemonConfiguration
    }

    func test_noOptions_giveExactlyTheConfigurationsDefaults() throws {
        XCTAssertEqual(try parse([]), DaemonConfiguration(home: Home.resolve(explicit: nil)))
    }

    func test_eachOption_overridesItsField_andNothingElse() throws {
        let defaults = DaemonConfiguration(home: Home.resolve(explicit: nil))
        let cases: [(option: String, arguments: [String], change: (inout DaemonConfiguration) -> Void)] = [
            ("home", ["/srv/syncd-test"], { $0.home = Home(path: "/srv/syncd-test") }),
            ("listen", ["127.0.0.1:9000"], { $0.network.listen = "127.0.0.1:9000" }),
            ("join", ["10.0.0.1:7700", "--join", "10.0.0.2:7700"], { $0.network.join = ["10.0.0.1:7700", "10.0.0.2:7700"] }),
            ("advertise", ["192.0.2.1:7700"], { $0.network.advertise = "192.0.2.1:7700" }),
            ("gossip-key", ["c2VjcmV0"], { $0.network.gossipKey = "c2VjcmV0" }),
            ("beacon-port", ["17701"], { $0.network.beaconPort = 17701 }),
            ("no-lan-beacon", [], { $0.network.beaconPort = nil }),
            ("trash-days", ["2.5"], { $0.replication.trashDays = 2.5 }),
            ("max-conflicts", ["3"], { $0.replication.maxConflicts = 3 }),
            ("rescan-interval", ["120"], { $0.scanning.rescanInterval = 120 }),
            ("keepalive-interval", ["1"], { $0.keepalive.interval = .seconds(1) }),
            ("keepalive-timeout", ["9"], { $0.keepalive.timeout = .seconds(9) }),
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
        XCTAssertEqual(options.subtracting(["log-level", "rebuild-index", "help", "version"]), Set(cases.map(\.option)))
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
                                     (["--listen", "nowhere"], "nowhere is not HOST:PORT")] {
            XCTAssertThrowsError(try parse(arguments)) { error in
                XCTAssertTrue(Syncd.message(for: error).contains(message), "\(arguments): \(Syncd.message(for: error))")
            }
        }
    }
}
