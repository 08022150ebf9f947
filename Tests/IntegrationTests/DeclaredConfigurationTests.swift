import ArgumentParser
import Foundation
import SyncDaemon
import SyncSecurity
@testable import syncd
import XCTest

/// The config file and the SYNCD_* environment (`DeclaredConfiguration`): every option in each,
/// precedence flags > environment > file > defaults, and errors that name what the user wrote.
/// No daemon runs here.
final class DeclaredConfigurationTests: XCTestCase {
    private var scratch = ""
    private var home: String { scratch + "/home" }
    private var file: String { scratch + "/syncd.yaml" }

    override func setUpWithError() throws {
        scratch = NSTemporaryDirectory() + "syncd-conf-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: scratch) }

    private func write(_ text: String, to path: String, mode: mode_t = 0o600) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        chmod(path, mode)
    }

    /// `syncd daemon ARGUMENTS` resolved with exactly `environment` (plus SYNCD_HOME).
    private func resolve(_ arguments: [String] = [], environment: [String: String] = [:]) throws -> ResolvedConfiguration {
        // Parsing runs `validate()`, which resolves with this process's environment first.
        let parsed = try Syncd.parseAsRoot(["daemon"] + arguments)
        guard let command = parsed as? DaemonCommand else { throw DaemonHarness.HarnessError("not syncd daemon") }
        return try command.resolve(environment: environment.merging(["SYNCD_HOME": home]) { a, _ in a })
    }

    private var defaults: DaemonConfiguration { DaemonConfiguration(home: Home(path: home)) }

    /// One test value per option, as YAML, as an environment variable, and what it changes.
    private var everyOption: [(option: DeclaredOption, yaml: String, environment: String, change: (inout DaemonConfiguration) -> Void)] {
        let key = String(repeating: "ab", count: 32)
        return [
            (.listen, "127.0.0.1:9000", "127.0.0.1:9000", { $0.network.listen = "127.0.0.1:9000" }),
            (.join, "[10.0.0.1:7700, seed.example:7700]", "10.0.0.1:7700,seed.example:7700",
             { $0.network.join = ["10.0.0.1:7700", "seed.example:7700"] }),
            (.advertise, "192.0.2.1:7700", "192.0.2.1:7700", { $0.network.advertise = "192.0.2.1:7700" }),
            (.gossipKey, key, key, { $0.network.gossipKey = key }),
            (.gossipKeyFile, scratch + "/cluster.key", scratch + "/cluster.key", { $0.network.gossipKey = String(repeating: "cd", count: 32) }),
            (.beaconPort, "17701", "17701", { $0.network.beaconPort = 17701 }),
            (.noLanBeacon, "true", "true", { $0.network.beaconPort = nil }),
            (.compression, "false", "false", { $0.network.compression = false }),
            (.trashDays, "2.5", "2.5", { $0.replication.trashDays = 2.5 }),
            (.maxConflicts, "3", "3", { $0.replication.maxConflicts = 3 }),
            (.rescanInterval, "120", "120", { $0.scanning.rescanInterval = 120 }),
            (.keepaliveInterval, "1", "1", { $0.keepalive.interval = .seconds(1) }),
            (.keepaliveTimeout, "9", "9", { $0.keepalive.timeout = .seconds(9) }),
            (.controlGroup, "0", "0", { $0.control.group = "0" }),
            (.http, "127.0.0.1:9090", "127.0.0.1:9090", { $0.http.listen = "127.0.0.1:9090" }),
            (.httpTokenFile, scratch + "/http.token", scratch + "/http.token", { $0.http.token = "0123456789abcdef0123" }),
            (.onApply, "'echo applied'", "echo applied", { $0.hooks.onApply = "echo applied" }),
            (.onApplyTimeout, "5", "5", { $0.hooks.timeout = 5 }),
        ]
    }

    func test_everyOption_canBeSetInTheFile_andInTheEnvironment() throws {
        try write(String(repeating: "cd", count: 32) + "\n", to: scratch + "/cluster.key")
        try write("0123456789abcdef0123\n", to: scratch + "/http.token")
        let cases = everyOption
        // Every option but the log level (not part of DaemonConfiguration; tested below) has a case.
        XCTAssertEqual(Set(cases.map(\.option)), Set(DeclaredOption.allCases).subtracting([.logLevel, .logFormat]))
        for c in cases {
            var expected = defaults
            c.change(&expected)
            XCTAssertNotEqual(expected, defaults, "\(c.option): the test value must differ from the default")
            try write("\(c.option.rawValue): \(c.yaml)\n", to: file)
            let fromFile = try resolve(["--config", file])
            XCTAssertEqual(fromFile.configuration, expected, "file key \(c.option.rawValue)")
            XCTAssertEqual(fromFile.sources[c.option], .file(file))
            let fromEnvironment = try resolve(environment: [c.option.environmentName: c.environment])
            XCTAssertEqual(fromEnvironment.configuration, expected, c.option.environmentName)
            XCTAssertEqual(fromEnvironment.sources[c.option], .environment)
        }
        try write("log_level: debug\n", to: file)
        XCTAssertEqual(try resolve(["--config", file]).logLevel, .debug)
        XCTAssertEqual(try resolve(environment: ["SYNCD_LOG_LEVEL": "trace"]).logLevel, .trace)
        XCTAssertEqual(try resolve().logLevel, .info)
        try write("log_format: json\n", to: file)
        XCTAssertEqual(try resolve(["--config", file]).logFormat, .json)
        XCTAssertEqual(try resolve(environment: ["SYNCD_LOG_FORMAT": "json"]).logFormat, .json)
        XCTAssertEqual(try resolve().logFormat, .text)
    }

    /// A folder's `owner`, `group`, `file_mode`, `dir_mode` (Docs/Operations.md, "Owners and modes").
    func test_folders_ownerGroupAndModes() throws {
        let secret = FolderSecret.generate().text
        try write("""
            folders:
              - path: /srv/pg
                secret: \(secret)
                owner: root
                group: "0"
                file_mode: 0640
                dir_mode: "0o750"
              - path: /srv/plain
                secret: \(secret.isEmpty ? "" : FolderSecret.generate().text)

            """, to: file)
        let folders = try resolve(["--config", file]).configuration.folders
        XCTAssertEqual(folders.first?.placement, .init(owner: "root", group: "0", fileMode: 0o640, directoryMode: 0o750))
        XCTAssertEqual(folders.last?.placement, .init(), "no policy: the writer's modes, the daemon's user")
        for (line, message) in [("file_mode: 0648", "folders[0].file_mode: expected permission bits in octal (0640), not 0648"),
                                ("dir_mode: 17777", "folders[0].dir_mode: expected permission bits in octal"),
                                ("owner: no-such-user-here", "folder /srv/pg: owner no-such-user-here is not a user on this host"),
                                ("colour: blue", "folders[0].colour: unknown key")] {
            try write("folders:\n  - path: /srv/pg\n    secret: \(secret)\n    \(line)\n", to: file)
            XCTAssertThrowsError(try resolve(["--config", file]), line) { error in
                XCTAssertTrue("\(error)".contains(message), "\(line): \(error)")
            }
        }
    }

    func test_precedence_isFlagsThenEnvironmentThenFileThenDefaults() throws {
        try write("trash_days: 1\nmax_conflicts: 4\njoin:\n  - 10.0.0.1:7700\n  - 10.0.0.2:7700\n", to: file)
        let environment = ["SYNCD_CONFIG": file, "SYNCD_TRASH_DAYS": "2", "SYNCD_JOIN": "10.0.0.3:7700"]
        var c = try resolve(["--trash-days", "3"], environment: environment).configuration
        XCTAssertEqual(c.replication.trashDays, 3, "a flag beats the environment")
        XCTAssertEqual(c.replication.maxConflicts, 4, "the file fills in what neither sets")
        XCTAssertEqual(c.network.join, ["10.0.0.3:7700"], "a list is replaced, not merged")
        XCTAssertEqual(c.scanning.rescanInterval, defaults.scanning.rescanInterval, "the default when nobody sets it")
        c = try resolve(environment: environment).configuration
        XCTAssertEqual(c.replication.trashDays, 2, "the environment beats the file")
        c = try resolve(environment: ["SYNCD_CONFIG": file]).configuration
        XCTAssertEqual(c.replication.trashDays, 1)
        XCTAssertEqual(c.network.join, ["10.0.0.1:7700", "10.0.0.2:7700"])
        c = try resolve(["--join", "10.0.0.4:7700"], environment: ["SYNCD_CONFIG": file]).configuration
        XCTAssertEqual(c.network.join, ["10.0.0.4:7700"])

        // Two options, one setting: the higher source decides, whichever of the two it sets.
        try write("no_lan_beacon: true\n", to: file)
        XCTAssertNil(try resolve(["--config", file]).configuration.network.beaconPort)
        XCTAssertEqual(try resolve(["--config", file, "--beacon-port", "17702"]).configuration.network.beaconPort, 17702)
        XCTAssertEqual(try resolve(["--config", file], environment: ["SYNCD_NO_LAN_BEACON": "false"]).configuration.network.beaconPort,
                       defaults.network.beaconPort)
        let keyFile = scratch + "/cluster.key"
        try write(String(repeating: "cd", count: 32), to: keyFile)
        try write("gossip_key: \(String(repeating: "ab", count: 32))\n", to: file)
        XCTAssertEqual(try resolve(["--config", file], environment: ["SYNCD_GOSSIP_KEY_FILE": keyFile]).configuration.network.gossipKey,
                       String(repeating: "cd", count: 32))
    }

    func test_theFile_isTheOptionOrSYNCD_CONFIG_orTheHomesSyncdYamlIfItExists() throws {
        XCTAssertNil(try resolve().file, "no file, no error: a home without syncd.yaml")
        try write("trash_days: 5\n", to: home + "/syncd.yaml")
        XCTAssertEqual(try resolve().file, home + "/syncd.yaml")
        XCTAssertEqual(try resolve().configuration.replication.trashDays, 5)
        try write("trash_days: 6\n", to: file)
        XCTAssertEqual(try resolve(environment: ["SYNCD_CONFIG": file]).configuration.replication.trashDays, 6)
        XCTAssertEqual(try resolve(["--config", file], environment: ["SYNCD_CONFIG": home + "/syncd.yaml"]).configuration.replication.trashDays, 6)
        XCTAssertThrowsError(try resolve(["--config", scratch + "/missing.yaml"])) { error in
            XCTAssertEqual(Syncd.message(for: error), "config file \(scratch)/missing.yaml: no such file")
        }
        try write("", to: file)
        XCTAssertEqual(try resolve(["--config", file]).configuration, defaults, "an empty file declares nothing")
    }

    func test_folders_withASecretOrASecretFileNextToTheConfig() throws {
        let rw = FolderSecret.generate().text, ro = try FolderSecret(parsing: rw).readOnly().text
        try FileManager.default.createDirectory(atPath: scratch + "/secrets", withIntermediateDirectories: true)
        try write(ro + "\n", to: scratch + "/secrets/docs.secret")
        try write("""
            folders:
              - path: /srv/data
                secret: \(rw)
              - path: /srv/docs
                secret_file: secrets/docs.secret
                on_apply: /usr/local/bin/reload-docs
            """, to: file)
        let resolved = try resolve(["--config", file])
        XCTAssertEqual(resolved.configuration.folders, [.init(path: "/srv/data", secret: rw),
                                                        .init(path: "/srv/docs", secret: ro, onApply: "/usr/local/bin/reload-docs")])
        XCTAssertTrue(resolved.warnings.isEmpty, "\(resolved.warnings)")
        chmod(file, 0o644)
        chmod(scratch + "/secrets/docs.secret", 0o644)
        let warned = try resolve(["--config", file]).warnings
        XCTAssertTrue(warned.contains { $0.hasPrefix("\(file) holds secrets and every user on this host can read it") }, "\(warned)")
        XCTAssertTrue(warned.contains { $0.hasPrefix("\(scratch)/secrets/docs.secret holds a secret") }, "\(warned)")
    }

    /// Each message names the file and key, or the variable, and says what is wrong — and never
    /// repeats a secret.
    func test_errors_nameTheFileTheKeyAndTheReason() throws {
        let rw = FolderSecret.generate().text
        let cases: [(yaml: String, message: String)] = [
            ("trash_days: lots", "config file \(file): trash_days: expected a number"),
            ("max_conflicts: 2.5", "config file \(file): max_conflicts: expected a whole number"),
            ("no_lan_beacon: maybe", "config file \(file): no_lan_beacon: expected true or false"),
            ("max_conflicts: 0", "config file \(file): max_conflicts must be at least 1"),
            ("keepalive_interval: 5\nkeepalive_timeout: 5", "config file \(file): keepalive_timeout must be longer than the keepalive interval"),
            ("listen: nowhere", "config file \(file): listen nowhere is not HOST:PORT"),
            ("join: [10.0.0.1:7700, 10.0.0.2]", "config file \(file): join 10.0.0.2 is not HOST:PORT"),
            ("join: {a: b}", "config file \(file): join: expected a list of HOST:PORT"),
            ("trash_days: [1, 2]", "config file \(file): trash_days: expected a single value"),
            ("log_level: loud", "config file \(file): log_level: unknown log level loud"),
            ("gossip_key: short", "config file \(file): gossip_key must be 32 bytes"),
            ("gossip_key: \(String(repeating: "ab", count: 32))\ngossip_key_file: k", "config file \(file): gossip_key and config file \(file): gossip_key_file are both set"),
            ("gossip_key_file: nokey", "config file \(file): gossip_key_file: cannot read \(scratch)/nokey: no such file"),
            ("http: 0.0.0.0:9090", "config file \(file): http 0.0.0.0:9090 is not a loopback address: give a token with --http-token-file"),
            ("http: nowhere", "config file \(file): http nowhere is not HOST:PORT"),
            ("http_token_file: notoken", "config file \(file): http_token_file: cannot read \(scratch)/notoken: no such file"),
            ("on_apply_timeout: soon", "config file \(file): on_apply_timeout: expected a number"),
            ("on_apply_timeout: 0", "config file \(file): on_apply_timeout must be positive"),
            ("trash-days: 3", "config file \(file): unknown key trash-days (did you mean trash_days?)"),
            ("home: /srv", "config file \(file): unknown key home"),
            ("- listen", "config file \(file): expected keys and values"),
            ("trash_days: 1\ntrash_days: 2", "config file \(file): line"),
            ("listen: \"unterminated", "config file \(file): line"),
            ("folders: /srv/data", "config file \(file): folders: expected a list"),
            ("folders:\n  - /srv/data", "config file \(file): folders[0]: expected path and secret or secret_file"),
            ("folders:\n  - secret: \(rw)", "config file \(file): folders[0].path: missing"),
            ("folders:\n  - path: data\n    secret: \(rw)", "config file \(file): folders[0].path: must be an absolute path"),
            ("folders:\n  - path: /srv/a\n    secret: \(rw)\n    secret_file: x", "config file \(file): folders[0]: give secret or secret_file, not both"),
            ("folders:\n  - path: /srv/a\n    secret: \(rw)\n    mode: 0640", "config file \(file): folders[0].mode: unknown key"),
            ("folders:\n  - path: /srv/a\n    secret: \(rw)\n  - path: /srv/b\n    secret: \(rw.dropLast(2))",
             "config file \(file): folders[1].secret: not a folder secret"),
            ("folders:\n  - path: /srv/a\n    secret: \(rw)\n  - path: /srv/a/\n    secret: \(rw)", "config file \(file): folder /srv/a/ is declared twice"),
        ]
        for c in cases {
            try write(c.yaml + "\n", to: file)
            XCTAssertThrowsError(try resolve(["--config", file]), c.yaml) { error in
                let message = Syncd.message(for: error)
                XCTAssertTrue(message.contains(c.message), "\(c.yaml)\nexpected: \(c.message)\n     got: \(message)")
                XCTAssertFalse(message.contains(rw.dropLast(2)), "a secret is repeated: \(message)")
            }
        }
        for (name, value, message) in [("SYNCD_TRASH_DAYS", "lots", "SYNCD_TRASH_DAYS: expected a number"),
                                       ("SYNCD_MAX_CONFLICTS", "0", "SYNCD_MAX_CONFLICTS must be at least 1"),
                                       ("SYNCD_NO_LAN_BEACON", "perhaps", "SYNCD_NO_LAN_BEACON: expected true or false"),
                                       ("SYNCD_JOIN", "10.0.0.1:7700,nowhere", "SYNCD_JOIN nowhere is not HOST:PORT")] {
            XCTAssertThrowsError(try resolve(environment: [name: value]), name) { error in
                XCTAssertTrue(Syncd.message(for: error).contains(message), "\(name): \(Syncd.message(for: error))")
            }
        }
    }

    /// The example in Docs/UserGuide.md ("Configuration") parses as documented.
    func test_theUserGuidesExample_parses() throws {
        let guide = try String(contentsOfFile: #filePath.components(separatedBy: "/Tests/")[0] + "/Docs/UserGuide.md", encoding: .utf8)
        let yaml = try XCTUnwrap(guide.components(separatedBy: "```yaml\n").dropFirst().first?.components(separatedBy: "```").first,
                                 "no ```yaml block in the user guide")
        try FileManager.default.createDirectory(atPath: scratch + "/secrets", withIntermediateDirectories: true)
        let photos = FolderSecret.generate().text, wiki = FolderSecret.generate().text
        try write(photos, to: scratch + "/secrets/photos.secret")
        try write(wiki, to: scratch + "/secrets/wiki.secret")
        try write(String(repeating: "ab", count: 32), to: scratch + "/cluster.key")
        try write("0123456789abcdef0123\n", to: scratch + "/http.token")
        // The guide's files are under /etc/syncd/; this copy's sit next to it, in the scratch directory.
        try write(yaml.replacingOccurrences(of: "/etc/syncd/", with: scratch + "/"), to: file)
        let c = try resolve(["--config", file]).configuration
        XCTAssertEqual(c.folders, [.init(path: "/srv/photos", secret: photos),
                                   .init(path: "/srv/wiki", secret: wiki, onApply: "/usr/local/bin/wiki-reload")])
        XCTAssertEqual(c.http.listen, "0.0.0.0:7780")
        XCTAssertEqual(c.http.token, "0123456789abcdef0123")
        XCTAssertEqual(c.network.join, ["10.0.1.5:7700", "10.0.2.5:7700"])
        XCTAssertEqual(c.network.gossipKey, String(repeating: "ab", count: 32))
        XCTAssertEqual(c.replication.trashDays, 14)
    }
}
