// swift-tools-version:6.1
import PackageDescription

// Modules are split by dependency weight (see Docs/Architecture.md):
// pure value types at the bottom, GRDB in exactly one module, I/O shells at the top.
let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]
let shell: [SwiftSetting] = [.swiftLanguageMode(.v5)]

let package = Package(
    name: "syncd",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "syncd", targets: ["syncd"]),
        .library(name: "SyncCore", targets: ["SyncCore"]),
        .library(name: "SyncSecurity", targets: ["SyncSecurity"]),
        .library(name: "SyncStore", targets: ["SyncStore"]),
        .library(name: "SyncWire", targets: ["SyncWire"]),
        .library(name: "SyncGossip", targets: ["SyncGossip"]),
        .library(name: "SyncFS", targets: ["SyncFS"]),
        .library(name: "SyncDaemon", targets: ["SyncDaemon"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        // `syncd daemon --config`: the YAML file and SYNCD_* variables (Docs/UserGuide.md, "Configuration").
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0", traits: ["YAML"]),
        .package(url: "https://github.com/jpsim/Yams", "5.4.0"..<"7.0.0"),
        // `--http`: /metrics, /healthz, /readyz, /api/status, /api/events and the status page (Docs/Operations.md).
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // `on_apply`: the per-folder hook run after each applied batch.
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        // Per-chunk wire compression: zlib's raw deflate (Protocol/wire.md, "Compression").
        .package(url: "https://github.com/adam-fowler/compress-nio", from: "1.5.0"),
    ],
    targets: [
        // System OpenSSL libcrypto: bulk hashing and AEAD (faster than swift-crypto's BoringSSL here).
        .systemLibrary(name: "CSyncCrypto", pkgConfig: "openssl",
                       providers: [.apt(["libssl-dev"])]),
        .target(name: "SyncCore", swiftSettings: strict),
        // Deflate and bounded inflate of chunks for the wire, over system zlib (compress-nio).
        .target(name: "SyncCompression",
                dependencies: [.product(name: "CompressNIO", package: "compress-nio"),
                               .product(name: "NIOCore", package: "swift-nio"),
                               .product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
                swiftSettings: strict),
        .target(name: "SyncSecurity",
                dependencies: ["SyncCore", "CSyncCrypto", .product(name: "Crypto", package: "swift-crypto")],
                swiftSettings: strict),
        .target(name: "SyncWire",
                dependencies: ["SyncCore", "SyncSecurity", .product(name: "Crypto", package: "swift-crypto")],
                swiftSettings: strict),
        // SWIM + Lifeguard membership as a pure state machine; no I/O, no dependencies.
        .target(name: "SyncGossip", swiftSettings: strict),
        // Pure replication planning (global state, conflicts, pull scheduling); the daemon's
        // FolderExchange moves onto it next (Docs/Architecture.md).
        .target(name: "SyncReplication", dependencies: ["SyncCore"], swiftSettings: strict),
        .target(name: "SyncStore",
                dependencies: ["SyncCore", .product(name: "GRDB", package: "GRDB.swift")],
                swiftSettings: strict),
        .target(name: "SyncFS",
                dependencies: ["SyncCore", "SyncSecurity", "SyncReplication", .product(name: "Logging", package: "swift-log")],
                swiftSettings: shell),
        .target(name: "SyncDaemon",
                dependencies: ["SyncCore", "SyncSecurity", "SyncStore", "SyncFS", "SyncWire", "SyncGossip", "SyncReplication", "SyncCompression",
                               .product(name: "Crypto", package: "swift-crypto"),
                               .product(name: "NIOCore", package: "swift-nio"),
                               .product(name: "NIOPosix", package: "swift-nio"),
                               .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                               .product(name: "Logging", package: "swift-log"),
                               .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                               .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                               .product(name: "Hummingbird", package: "hummingbird"),
                               .product(name: "Metrics", package: "swift-metrics"),
                               .product(name: "Prometheus", package: "swift-prometheus"),
                               .product(name: "Subprocess", package: "swift-subprocess"),
                               .product(name: "SystemPackage", package: "swift-system")],
                swiftSettings: strict),
        // Every decoder of untrusted bytes as a fuzz target (see Docs/Fuzzing.md).
        .target(name: "SyncFuzz",
                dependencies: ["SyncCore", "SyncSecurity", "SyncWire", .product(name: "Crypto", package: "swift-crypto")],
                swiftSettings: strict),
        .executableTarget(name: "syncd-fuzz", dependencies: ["SyncFuzz"], swiftSettings: strict),
        .executableTarget(name: "syncd",
                          dependencies: ["SyncDaemon", "SyncSecurity", "SyncCore", "SyncFS",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser"),
                                         .product(name: "Configuration", package: "swift-configuration"),
                                         .product(name: "Yams", package: "Yams"),
                                         .product(name: "Logging", package: "swift-log")],
                          swiftSettings: strict),
        .testTarget(name: "SyncCoreTests", dependencies: ["SyncCore"]),
        .testTarget(name: "SyncCompressionTests", dependencies: ["SyncCompression"]),
        .testTarget(name: "SyncSecurityTests", dependencies: ["SyncSecurity"], resources: [.copy("Vectors")]),
        .testTarget(name: "SyncStoreTests", dependencies: ["SyncStore"]),
        .testTarget(name: "SyncWireTests", dependencies: ["SyncWire", "SyncSecurity"], resources: [.copy("Vectors")]),
        .testTarget(name: "SyncFuzzTests", dependencies: ["SyncFuzz"]),
        .testTarget(name: "SyncGossipTests", dependencies: ["SyncGossip"]),
        .testTarget(name: "SyncReplicationTests", dependencies: ["SyncReplication", "SyncFS"]),
        .testTarget(name: "SyncFSTests", dependencies: ["SyncFS", "SyncStore"]),
        // Also the `syncd` executable itself: its command line is parsed in tests (DaemonCommandTests).
        .testTarget(name: "IntegrationTests",
                    dependencies: ["SyncDaemon", "SyncWire", "SyncSecurity", "SyncStore", "SyncReplication", "SyncFS", "SyncCompression", "syncd",
                                   .product(name: "ArgumentParser", package: "swift-argument-parser"),
                                   .product(name: "Crypto", package: "swift-crypto"),
                                   .product(name: "GRDB", package: "GRDB.swift")]),
    ]
)
