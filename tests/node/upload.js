// Uploads with CleverTap's official Node library (npm `clevertap`), unchanged except for its
// API endpoint, which points at the tapline sandbox. Prints the library's results as JSON.
// Usage: node upload.js BASE_URL ACCOUNT_ID PASSCODE
const CleverTap = require("clevertap");

const [baseUrl, accountId, passcode] = process.argv.slice(2);
const clevertap = CleverTap.init(accountId, passcode, CleverTap.REGIONS.EUROPE);
clevertap.api.apiEndpoint = `${baseUrl}/1`;

const records = [];
for (let i = 0; i < 250; i++) {
  records.push({
    type: "profile",
    identity: `node-${i}`,
    profileData: { Name: `Node ${i}`, Email: `node${i}@example.com`, Gender: i % 2 ? "M" : "F" },
  });
}
records.push({
  type: "event",
  identity: "node-1",
  ts: 1764300000,
  evtName: "Charged",
  evtData: { Amount: 300, Items: [{ Category: "books", Quantity: 1 }] },
});
records.push({ type: "profile", identity: "node-bad", profileData: { Email: "$$$$$" } });

clevertap
  .upload(records, { batchSize: 1000 })
  .then((results) => console.log(JSON.stringify(results)))
  .catch((error) => {
    console.error(String(error));
    process.exit(1);
  });
