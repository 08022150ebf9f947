import Configuration
import Foundation
import Logging
import SyncDaemon
import SyncSecurity
import Yams

/// A `syncd daemon` option that the config file and the environment can set as well: the file
/// key is the long option name with `_` for `-`, the environment variable `SYNCD_` and the key
/// in capitals (Docs/UserGuide.md, "Configuration"). `--home`, `--config` and `--rebuild-index`
/// are not among them: the home and the file are found before any file is read (`SYNCD_HOME`,
/// `SYNCD_CONFIG`), and rebuilding the index is a one-off action, not a setting.
enum DeclaredOption: String, CaseIterable, Sendable {
    case listen, join, advertise
    case gossipKey = "gossip_key", gossipKeyFile = "gossip_key_file"
    case beaconPort = "beacon_port", noLanBeacon = "no_lan_beacon", compression
    case trashDays = "trash_days", maxConflicts = "max_conflicts", rescanInterval = "rescan_interval"
    case keepaliveInterval = "keepalive_interval", keepaliveTimeout = "keepalive_timeout"
    case logLevel = "log_level", logFormat = "log_format"
    case controlGroup = "control_group"
    case http, httpTokenFile = "http_token_file"
    case onApply = "on_apply", onApplyTimeout = "on_apply_timeout"

    /// The long option without its dashes: `trash-days`.
    var longName: String { rawValue.replacingOccurrences(of: "_", with: "-") }
    var environmentName: String { "SYNCD_" + rawValue.uppercased() }
    var isList: Bool { self == .join }
    var isSecret: Bool { self == .gossipKey }

    /// The option whose value is wrong, by the name `DaemonConfiguration.Invalid` uses.
    init?(longName: String) { self.init(rawValue: longName.replacingOccurrences(of: "-", with: "_")) }
}

/// Where a setting was declared, ranked: a flag beats the environment, which beats the file.
enum SettingSource: Equatable, Comparable, Sendable {
    case file(String), environment, flag

    /// The option as the user wrote it there: `--trash-days`, `SYNCD_TRASH_DAYS`,
    /// `config file /etc/syncd.yaml: trash_days`.
    func name(_ option: DeclaredOption) -> String {
        switch self {
        case .flag: "--\(option.longName)"
        case .environment: option.environmentName
        case .file(let path): "config file \(path): \(option.rawValue)"
        }
    }

    private var rank: Int {
        switch self {
        case .file: 0
        case .environment: 1
        case .flag: 2
        }
    }

    static func < (a: SettingSource, b: SettingSource) -> Bool { a.rank < b.rank }
}

/// A configuration that cannot run, named the way the user wrote it: the file and key, the
/// environment variable, or the option. `byFlag` when a command-line option is to blame (the
/// usage is shown then).
struct ConfigurationError: Error, CustomStringConvertible {
    let description: String
    var byFlag = false
    init(_ description: String, byFlag: Bool = false) { self.description = description; self.byFlag = byFlag }
}

/// One declared value, typed as its option is.
enum DeclaredValue: Equatable, Sendable {
    case string(String), strings([String]), int(Int), double(Double), bool(Bool)

    var string: String? { if case .string(let v) = self { v } else { nil } }
    var strings: [String]? { if case .strings(let v) = self { v } else { nil } }
    var int: Int? { if case .int(let v) = self { v } else { nil } }
    var double: Double? { if case .double(let v) = self { v } else { nil } }
    var bool: Bool? { if case .bool(let v) = self { v } else { nil } }
}

/// What `syncd daemon` runs with, and what to log about it once logging is set up.
struct ResolvedConfiguration {
    var configuration: DaemonConfiguration
    var logLevel: Logger.Level
    var logFormat: LogFormat = .text
    /// The config file read, if any.
    var file: String?
    /// Where each option that is not at its default came from.
    var sources: [DeclaredOption: SettingSource]
    /// Said at warning level when the daemon starts (a secret on the command line, a secret file
    /// other users can read).
    var warnings: [String]
}

/// Reads the declared configuration: the config file and the `SYNCD_*` environment through
/// apple/swift-configuration (an `EnvironmentVariablesProvider` under the `syncd` prefix, ahead
/// of the file's provider), then the command line's options on top.
///
/// The file is YAML. swift-configuration's `YAMLSnapshot` (1.4.0) holds scalars and lists of
/// scalars only, so the file is parsed with Yams first: its keys are checked (an unknown key is
/// an error, not a silent no-op), `folders:` — a list of mappings — is read here, and the rest
/// becomes the snapshot the provider serves.
enum DeclaredConfiguration {
    static let defaultFileName = "syncd.yaml"
    static let configEnvironmentName = "SYNCD_CONFIG"

    /// `flags`: the options given on the command line; `configPath`: `--config`.
    static func resolve(home: Home, configPath: String?, flags: [DeclaredOption: DeclaredValue],
                        environment: [String: String]) throws -> ResolvedConfiguration {
        var warnings: [String] = []
        // The file: --config, then SYNCD_CONFIG, then <home>/syncd.yaml when it exists.
        var path: String?
        if let explicit = configPath ?? environment[configEnvironmentName].flatMap({ $0.isEmpty ? nil : $0 }) {
            path = absolute(explicit, relativeTo: FileManager.default.currentDirectoryPath)
        } else if FileManager.default.fileExists(atPath: home.path + "/" + defaultFileName) {
            path = home.path + "/" + defaultFileName
        }
        let file = try path.map { try ConfigFile(path: $0) }
        if let file { warnings += file.warnings }

        // The environment, then the file, through one reader; `Provenance` says who answered.
        let environmentProvider = EnvironmentVariablesProvider(
            environmentVariables: environment.filter { $0.key.hasPrefix("SYNCD_") },
            secretsSpecifier: .specific([DeclaredOption.gossipKey.environmentName])
        ).prefixKeys(with: "syncd")
        var providers: [any ConfigProvider] = [environmentProvider]
        if let file { providers.append(file.provider) }
        let provenance = Provenance()
        let reader = ConfigReader(providers: providers, accessReporter: provenance)
        var declared: [DeclaredOption: (DeclaredValue, SettingSource)] = [:]
        for option in DeclaredOption.allCases {
            let key = ConfigKey([option.rawValue])
            let value: DeclaredValue?
            switch option {
            case .listen, .advertise, .gossipKey, .gossipKeyFile, .logLevel, .logFormat, .controlGroup, .http, .httpTokenFile, .onApply:
                value = reader.string(forKey: key, isSecret: option.isSecret).map(DeclaredValue.string)
            case .join: value = reader.stringArray(forKey: key).map(DeclaredValue.strings)
            case .beaconPort, .maxConflicts: value = reader.int(forKey: key).map(DeclaredValue.int)
            case .trashDays, .rescanInterval, .keepaliveInterval, .keepaliveTimeout, .onApplyTimeout:
                value = reader.double(forKey: key).map(DeclaredValue.double)
            case .noLanBeacon, .compression: value = reader.bool(forKey: key).map(DeclaredValue.bool)
            }
            let answer = provenance.answer(for: option.rawValue)
            if let failed = answer.failedBy {
                let source: SettingSource = failed == file?.provider.providerName ? .file(file!.path) : .environment
                throw ConfigurationError("\(source.name(option)): \(Self.expected(option))")
            }
            if let value, let by = answer.answeredBy {
                declared[option] = (value, by == file?.provider.providerName ? .file(file!.path) : .environment)
            }
        }
        for (option, value) in flags { declared[option] = (value, .flag) }
        return try apply(declared, home: home, folders: file?.folders ?? [], file: file?.path, warnings: warnings)
    }

    /// `DaemonConfiguration(home:)`'s defaults with every declared option applied, validated.
    static func apply(_ declared: [DeclaredOption: (DeclaredValue, SettingSource)], home: Home,
                      folders: [DaemonConfiguration.Folder], file: String?, warnings: [String]) throws -> ResolvedConfiguration {
        var warnings = warnings
        var c = DaemonConfiguration(home: home)
        var sources = declared.mapValues(\.1)
        func value(_ option: DeclaredOption) -> DeclaredValue? { declared[option]?.0 }
        if let v = value(.listen)?.string { c.network.listen = v }
        if let v = value(.join)?.strings { c.network.join = v.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
        if let v = value(.advertise)?.string { c.network.advertise = v }
        if let v = value(.compression)?.bool { c.network.compression = v }
        if let v = value(.trashDays)?.double { c.replication.trashDays = v }
        if let v = value(.maxConflicts)?.int { c.replication.maxConflicts = v }
        if let v = value(.rescanInterval)?.double { c.scanning.rescanInterval = v }
        if let v = value(.keepaliveInterval)?.double { c.keepalive.interval = .seconds(v) }
        if let v = value(.keepaliveTimeout)?.double { c.keepalive.timeout = .seconds(v) }
        if let v = value(.controlGroup)?.string { c.control.group = v }
        if let v = value(.http)?.string { c.http.listen = v }
        if let v = value(.onApply)?.string, !v.trimmingCharacters(in: .whitespaces).isEmpty { c.hooks.onApply = v }
        if let v = value(.onApplyTimeout)?.double { c.hooks.timeout = v }
        // The HTTP token only ever comes from a file (never the command line), found like the gossip key's.
        if let (file, source) = declared[.httpTokenFile].flatMap({ v in v.0.string.map { ($0, v.1) } }) {
            var base = FileManager.default.currentDirectoryPath
            if case .file(let configFile) = source { base = (configFile as NSString).deletingLastPathComponent }
            let (text, warning) = try readSecretFile(absolute(file, relativeTo: base), naming: source.name(.httpTokenFile))
            c.http.token = text
            if let warning { warnings.append(warning) }
        }

        // Two options, one setting: the highest-ranked source that declares either decides.
        if let (option, source) = try decisive(.gossipKey, .gossipKeyFile, in: declared) {
            sources[option == .gossipKey ? .gossipKeyFile : .gossipKey] = nil
            if option == .gossipKey {
                c.network.gossipKey = value(.gossipKey)?.string
                if source == .flag {
                    warnings.append("--gossip-key puts the cluster key on the command line, where every local user can read it (ps); use --gossip-key-file or SYNCD_GOSSIP_KEY")
                }
            } else {
                // A file named in the config file is found next to it; otherwise from the current directory.
                var base = FileManager.default.currentDirectoryPath
                if case .file(let configFile) = source { base = (configFile as NSString).deletingLastPathComponent }
                let (text, warning) = try readSecretFile(absolute(value(.gossipKeyFile)?.string ?? "", relativeTo: base),
                                                         naming: source.name(.gossipKeyFile))
                c.network.gossipKey = text
                if let warning { warnings.append(warning) }
            }
        }
        // `no_lan_beacon: true` turns the beacon off unless a higher-ranked source sets `beacon_port`.
        if let (_, top) = try decisive(.noLanBeacon, .beaconPort, in: declared, bothAllowed: true) {
            if declared[.noLanBeacon]?.1 == top, value(.noLanBeacon)?.bool == true {
                c.network.beaconPort = nil
            } else if let port = value(.beaconPort)?.int {
                c.network.beaconPort = port
            }
        }
        let level: Logger.Level
        if let text = value(.logLevel)?.string {
            guard let l = Logger.Level(rawValue: text) else {
                throw ConfigurationError("\(sources[.logLevel]!.name(.logLevel)): unknown log level \(text) (trace, debug, info, notice, warning, error, critical)",
                                         byFlag: sources[.logLevel] == .flag)
            }
            level = l
        } else {
            level = .info
        }
        var format = LogFormat.text
        if let text = value(.logFormat)?.string {
            guard let f = LogFormat(rawValue: text) else {
                throw ConfigurationError("\(sources[.logFormat]!.name(.logFormat)): unknown log format \(text) (text, json)",
                                         byFlag: sources[.logFormat] == .flag)
            }
            format = f
        }
        c.folders = folders
        do {
            try c.validate()
        } catch let invalid as DaemonConfiguration.Invalid {
            // The key file, when the key came from one.
            let candidates = invalid.option.flatMap(DeclaredOption.init(longName:)).map { $0 == .gossipKey ? [$0, .gossipKeyFile] : [$0] } ?? []
            guard let option = candidates.first(where: { sources[$0] != nil }), let source = sources[option] else {
                throw ConfigurationError(file.map { "config file \($0): \(invalid.reason)" } ?? invalid.description)
            }
            throw ConfigurationError("\(source.name(option)) \(invalid.reason)", byFlag: source == .flag)
        }
        return ResolvedConfiguration(configuration: c, logLevel: level, logFormat: format, file: file, sources: sources, warnings: warnings)
    }

    /// Of two options that make one setting, the one declared by the highest-ranked source; nil
    /// when neither is declared. The same source declaring both is an error unless `bothAllowed`.
    private static func decisive(_ a: DeclaredOption, _ b: DeclaredOption, in declared: [DeclaredOption: (DeclaredValue, SettingSource)],
                                 bothAllowed: Bool = false) throws -> (DeclaredOption, SettingSource)? {
        switch (declared[a]?.1, declared[b]?.1) {
        case (nil, nil): return nil
        case (let s?, nil): return (a, s)
        case (nil, let s?): return (b, s)
        case (let sa?, let sb?):
            if sa == sb && !bothAllowed {
                throw ConfigurationError("\(sa.name(a)) and \(sb.name(b)) are both set; give one", byFlag: sa == .flag)
            }
            return sa >= sb ? (a, sa) : (b, sb)
        }
    }

    private static func expected(_ option: DeclaredOption) -> String {
        switch option {
        case .join: "expected a list of HOST:PORT"
        case .beaconPort, .maxConflicts: "expected a whole number"
        case .trashDays, .rescanInterval, .keepaliveInterval, .keepaliveTimeout, .onApplyTimeout: "expected a number"
        case .noLanBeacon, .compression: "expected true or false"
        default: "expected a text value"
        }
    }

    static func absolute(_ path: String, relativeTo base: String) -> String {
        path.hasPrefix("/") ? path : (base.hasSuffix("/") ? base : base + "/") + path
    }

    /// A secret kept in a file (`gossip_key_file`, a folder's `secret_file`): its text without
    /// surrounding whitespace, and a warning when other users may read the file.
    static func readSecretFile(_ path: String, naming name: String) throws -> (String, String?) {
        guard let data = FileManager.default.contents(atPath: path) else {
            let why = access(path, F_OK) == 0 ? "permission denied" : "no such file"
            throw ConfigurationError("\(name): cannot read \(path): \(why)")
        }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !text.isEmpty else { throw ConfigurationError("\(name): \(path) is empty") }
        var st = stat()
        let warning = stat(path, &st) == 0 && st.st_mode & 0o004 != 0
            ? "\(path) holds a secret and every user on this host can read it (mode \(String(st.st_mode & 0o777, radix: 8))): chmod 600 it"
            : nil
        return (text, warning)
    }
}

/// Which provider answered each key read through the `ConfigReader`, and which one failed to
/// convert its value (the reader's optional getters return nil then, and report the failure here).
final class Provenance: AccessReporter, @unchecked Sendable {
    struct Answer { var answeredBy: String?; var failedBy: String? }
    private let lock = NSLock()
    private var answers: [String: Answer] = [:]

    func report(_ event: AccessEvent) {
        var answer = Answer()
        for result in event.providerResults {
            switch result.result {
            case .failure: answer.failedBy = result.providerName
            case .success(let lookup) where lookup.value != nil: answer.answeredBy = result.providerName
            case .success: continue
            }
            break
        }
        if event.conversionError != nil, answer.failedBy == nil { answer.failedBy = answer.answeredBy }
        let key = event.metadata.key.components.joined(separator: ".")
        lock.withLock { answers[key] = answer }
    }

    func answer(for key: String) -> Answer { lock.withLock { answers[key] ?? Answer() } }
}

/// A config file, checked: every key known, `folders:` read (with their secret files), and the
/// other keys served to swift-configuration as a `YAMLSnapshot`.
struct ConfigFile {
    let path: String
    let provider: SnapshotProvider<YAMLSnapshot>
    let folders: [DaemonConfiguration.Folder]
    var warnings: [String] = []

    init(path: String) throws {
        self.path = path
        func fail(_ what: String) -> ConfigurationError { ConfigurationError("config file \(path): \(what)") }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw fail(access(path, F_OK) == 0 ? "cannot read it: permission denied" : "no such file")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw fail("not UTF-8 text") }
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw fail(Self.describe(error))
        }
        var kept: [(Node, Node)] = []
        var folders: [DaemonConfiguration.Folder] = []
        var holdsSecrets = false
        if let root, root.null == nil {
            guard let mapping = root.mapping else { throw fail("expected keys and values (key: value) at the top level") }
            for (keyNode, value) in mapping {
                guard let key = keyNode.string else { throw fail("line \(keyNode.mark?.line ?? 0): a key must be text") }
                if key == "folders" {
                    (folders, warnings) = try Self.folders(value, file: path)
                    holdsSecrets = holdsSecrets || value.sequence?.contains { $0.mapping?.contains { $0.key.string == "secret" } == true } == true
                    continue
                }
                guard let option = DeclaredOption(rawValue: key) else {
                    let hint = DeclaredOption(longName: key).map { " (did you mean \($0.rawValue)?)" } ?? ""
                    throw fail("unknown key \(key)\(hint); known keys: \((DeclaredOption.allCases.map(\.rawValue) + ["folders"]).joined(separator: ", "))")
                }
                if value.null != nil { continue }   // `key:` with nothing after it: not set
                if option.isSecret { holdsSecrets = true }
                if option.isList {
                    if value.scalar != nil {
                        kept.append((keyNode, Node.sequence(Node.Sequence([value]))))
                    } else if let items = value.sequence, items.allSatisfy({ $0.scalar != nil }) {
                        kept.append((keyNode, value))
                    } else {
                        throw fail("\(key): expected a list of HOST:PORT")
                    }
                } else {
                    guard value.scalar != nil else { throw fail("\(key): expected a single value, not a list or mapping") }
                    kept.append((keyNode, value))
                }
            }
        }
        self.folders = folders
        let name = "config file \(path)"
        let yaml = try Yams.serialize(node: .mapping(Node.Mapping(kept)))
        let bytes = Data(yaml.utf8)
        provider = SnapshotProvider(providerName: name, served: try YAMLSnapshot(
            data: bytes.bytes, providerName: name,
            parsingOptions: .init(secretsSpecifier: .specific([DeclaredOption.gossipKey.rawValue]))))
        var st = stat()
        if holdsSecrets, stat(path, &st) == 0, st.st_mode & 0o004 != 0 {
            warnings.append("\(path) holds secrets and every user on this host can read it (mode \(String(st.st_mode & 0o777, radix: 8))): chmod 600 it, or use secret_file and gossip_key_file")
        }
    }

    /// "0640", "640", "0o640" → 0o640; nil for anything else, or above 07777.
    static func octalMode(_ text: String) -> UInt32? {
        var digits = Substring(text.trimmingCharacters(in: .whitespaces))
        if digits.hasPrefix("0o") { digits = digits.dropFirst(2) }
        guard !digits.isEmpty, digits.count <= 5, let mode = UInt32(digits, radix: 8), mode <= 0o7777 else { return nil }
        return mode
    }

    /// Line, column and problem, without the document's text (it may hold secrets).
    static func describe(_ error: YamlError) -> String {
        switch error {
        case let .scanner(_, problem, mark, _), let .parser(_, problem, mark, _), let .composer(_, problem, mark, _):
            "line \(mark.line), column \(mark.column): \(problem)"
        case let .duplicatedKeysInMapping(duplicates, context):
            "line \(context.mark.line): \(duplicates.joined(separator: ", ")) given twice"
        case let .reader(problem, _, _, _):
            problem
        default:
            "not valid YAML"
        }
    }

    /// `folders:`: a list of mappings with `path` and `secret` or `secret_file` (relative to the
    /// config file's directory). Each secret is checked here, so a typo stops the daemon before
    /// it creates anything.
    static func folders(_ node: Node, file: String) throws -> ([DaemonConfiguration.Folder], [String]) {
        func fail(_ what: String) -> ConfigurationError { ConfigurationError("config file \(file): \(what)") }
        if node.null != nil { return ([], []) }
        guard let items = node.sequence else {
            throw fail("folders: expected a list, each item with path and secret or secret_file")
        }
        var folders: [DaemonConfiguration.Folder] = []
        var warnings: [String] = []
        for (index, item) in items.enumerated() {
            let at = "folders[\(index)]"
            guard let mapping = item.mapping else { throw fail("\(at): expected path and secret or secret_file") }
            var values: [String: String] = [:]
            for (keyNode, value) in mapping {
                guard let key = keyNode.string, ["path", "secret", "secret_file", "owner", "group", "file_mode", "dir_mode", "on_apply"].contains(key) else {
                    throw fail("\(at).\(keyNode.string ?? "?"): unknown key; a folder has path, secret or secret_file, and optionally owner, group, file_mode, dir_mode, on_apply")
                }
                guard value.scalar != nil, let text = value.string, value.null == nil else { throw fail("\(at).\(key): expected a single value") }
                values[key] = text
            }
            guard let path = values["path"] else { throw fail("\(at).path: missing") }
            guard path.hasPrefix("/") else { throw fail("\(at).path: must be an absolute path, not \(path)") }
            let secretText: String
            let secretKey: String
            switch (values["secret"], values["secret_file"]) {
            case (nil, nil): throw fail("\(at): needs secret or secret_file")
            case (_?, _?): throw fail("\(at): give secret or secret_file, not both")
            case (let text?, nil):
                secretText = text
                secretKey = "secret"
            case (nil, let secretFile?):
                let secretPath = DeclaredConfiguration.absolute(secretFile, relativeTo: (file as NSString).deletingLastPathComponent)
                let (text, warning) = try DeclaredConfiguration.readSecretFile(secretPath, naming: "config file \(file): \(at).secret_file")
                if let warning { warnings.append(warning) }
                secretText = text
                secretKey = "secret_file"
            }
            do {
                _ = try FolderSecret(parsing: secretText)
            } catch {
                throw fail("\(at).\(secretKey): not a folder secret (\(error))")
            }
            var placement = DaemonConfiguration.Placement(owner: values["owner"], group: values["group"])
            for (key, text) in [("file_mode", values["file_mode"]), ("dir_mode", values["dir_mode"])] {
                guard let text else { continue }
                guard let mode = Self.octalMode(text) else {
                    throw fail("\(at).\(key): expected permission bits in octal (0640), not \(text)")
                }
                if key == "file_mode" { placement.fileMode = mode } else { placement.directoryMode = mode }
            }
            folders.append(.init(path: path, secret: secretText.trimmingCharacters(in: .whitespacesAndNewlines), placement: placement,
                                 onApply: values["on_apply"].flatMap { $0.trimmingCharacters(in: .whitespaces).isEmpty ? nil : $0 }))
        }
        return (folders, warnings)
    }
}

/// A provider that serves one snapshot that never changes: swift-configuration's file providers
/// read their file themselves, and this file is read (and checked) before.
struct SnapshotProvider<Snapshot: ConfigSnapshot>: ConfigProvider {
    let providerName: String
    let served: Snapshot

    func value(forKey key: AbsoluteConfigKey, type: ConfigType) throws -> LookupResult {
        try served.value(forKey: key, type: type)
    }

    func fetchValue(forKey key: AbsoluteConfigKey, type: ConfigType) async throws -> LookupResult {
        try value(forKey: key, type: type)
    }

    func watchValue<Return: ~Copyable>(
        forKey key: AbsoluteConfigKey, type: ConfigType,
        updatesHandler: nonisolated(nonsending) (_ updates: ConfigUpdatesAsyncSequence<Result<LookupResult, any Error>, Never>) async throws -> Return
    ) async throws -> Return {
        try await watchValueFromValue(forKey: key, type: type, updatesHandler: updatesHandler)
    }

    func snapshot() -> any ConfigSnapshot { served }

    func watchSnapshot<Return: ~Copyable>(
        updatesHandler: nonisolated(nonsending) (_ updates: ConfigUpdatesAsyncSequence<any ConfigSnapshot, Never>) async throws -> Return
    ) async throws -> Return {
        try await watchSnapshotFromSnapshot(updatesHandler: updatesHandler)
    }
}
